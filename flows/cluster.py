"""Where tasks run: a Dask cluster chosen by settings, and a DaskTaskRunner for it.

The flow process creates the cluster once and every subflow gets its own
``DaskTaskRunner`` pointing at it, so references and all studies share its workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect_dask import DaskTaskRunner

from lambda_hat.settings import ClusterSettings


class ClusterError(RuntimeError):
    """The cluster settings cannot give a cluster. One line."""


@contextmanager
def dask_cluster(settings: ClusterSettings) -> Iterator[str]:
    """Yield a scheduler address for the configured cluster; close it afterwards."""
    if settings.kind == "address":
        if not settings.scheduler_address:
            raise ClusterError("cluster.scheduler_address: required when cluster.kind is 'address'")
        yield settings.scheduler_address
        return
    if settings.kind != "local":
        raise ClusterError(
            f"cluster.kind: {settings.kind!r} needs a deployments/ profile, which this release "
            "does not have yet (allowed now: local, address)"
        )
    from distributed import LocalCluster

    _share_api_url_with_workers()
    with LocalCluster(
        n_workers=settings.n_workers,
        threads_per_worker=settings.threads_per_worker,
        processes=True,
        dashboard_address=None,
    ) as cluster:
        yield cluster.scheduler_address


def _share_api_url_with_workers() -> None:
    """Worker processes read the Prefect API URL from the environment they inherit; the
    flow may have it only in its settings context (tests, profiles)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = url


def runner_for(address: str) -> DaskTaskRunner:
    return DaskTaskRunner(address=address)
