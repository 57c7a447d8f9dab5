"""Where tasks run: a Dask cluster built from a profile in ``deployments/profiles``.

A profile has a ``trials`` and a ``reference`` section (HMC references get bigger jobs);
``LAMBDA_HAT_CLUSTER__KIND`` picks local / slurm / pbs (or an existing scheduler address)
and ``LAMBDA_HAT_CLUSTER__PROFILE`` an edited copy of a profile. The flow process creates a
cluster per role and every subflow gets its own ``DaskTaskRunner`` pointing at it.

No silent hangs: after asking for jobs the flow waits at most ``start_timeout_sec`` for the
first ``start_workers`` workers (default 1), then stops the jobs and fails with a message
that says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lambda_hat.io import safe_load_yaml
from lambda_hat.problems.specs import format_validation_error
from lambda_hat.settings import ClusterSettings

if TYPE_CHECKING:
    from prefect_dask import DaskTaskRunner

log = logging.getLogger(__name__)

PROFILES = Path(__file__).resolve().parents[1] / "deployments" / "profiles"
Role = Literal["trials", "reference"]


class ClusterError(RuntimeError):
    """The cluster cannot be built or did not start. One line."""


class Adapt(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minimum_jobs: int = Field(ge=0)
    maximum_jobs: int = Field(ge=1)


class Scale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    jobs: int | None = Field(default=None, ge=1)
    adapt: Adapt | None = None


class RoleProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cluster: dict[str, Any] = {}
    scale: Scale = Scale(jobs=1)
    start_timeout_sec: float = Field(default=300, gt=0)
    # Workers that must have joined before work starts (all jobs' workers for benchmarks;
    # 1 on a busy cluster, where the rest join as their jobs start).
    start_workers: int = Field(default=1, ge=1)


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trials: RoleProfile
    reference: RoleProfile


def load_profile(settings: ClusterSettings) -> Profile:
    """The profile file named by the settings, or ``deployments/profiles/<kind>.yaml``."""
    path = Path(settings.profile) if settings.profile else PROFILES / f"{settings.kind}.yaml"
    if not path.is_file():
        raise ClusterError(f"cluster.profile: no such file {str(path)!r}")
    data = safe_load_yaml(path.read_text(), str(path), ClusterError)
    try:
        return Profile.model_validate(data)
    except ValidationError as error:
        raise ClusterError(f"{path}: {format_validation_error(error)}") from None


def _jobqueue_cluster(kind: str, options: dict[str, Any]):
    import dask_jobqueue

    cluster_class = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]
    options = {key: value for key, value in options.items() if value is not None}
    return cluster_class(**options)


def _start(cluster, role: RoleProfile, kind: str) -> None:
    """Scale the jobqueue cluster and wait, boundedly, for its first ``start_workers``."""
    from distributed import Client

    if role.scale.adapt is not None:
        cluster.adapt(
            minimum_jobs=role.scale.adapt.minimum_jobs, maximum_jobs=role.scale.adapt.maximum_jobs
        )
    else:
        cluster.scale(jobs=role.scale.jobs or 1)
    # Not the default client: prefect_dask's runner uses a default client's cluster in
    # place of its own address, so a reference subflow starting while the trials' cluster
    # waits here would send its tasks to the trials' jobs.
    with Client(cluster, set_as_default=False) as client:
        try:
            client.wait_for_workers(role.start_workers, timeout=role.start_timeout_sec)
        except TimeoutError:
            queue = role.cluster.get("queue")
            joined = len(client.scheduler_info()["workers"])
            who = "no" if joined == 0 else f"only {joined} of {role.start_workers}"
            raise ClusterError(
                f"{who} {kind} worker joined within start_timeout_sec={role.start_timeout_sec:g} s "
                f"(queue={queue!r}, job_name={role.cluster.get('job_name')!r}): the jobs did not "
                "start; check the partition/queue, account and resources (squeue/qstat)"
            ) from None


def check_cluster(settings: ClusterSettings) -> None:
    """Fail before any work on a cluster setting that cannot work (a missing or invalid
    profile, an ``address`` kind without an address)."""
    if settings.kind == "address":
        if not settings.scheduler_address:
            raise ClusterError("cluster.scheduler_address: required when cluster.kind is 'address'")
        return
    load_profile(settings)


@contextmanager
def dask_cluster(settings: ClusterSettings, role: Role = "trials") -> Iterator[str]:
    """Yield a scheduler address for ``role``; stop the cluster (and its jobs) afterwards."""
    check_cluster(settings)
    if settings.kind == "address":
        yield settings.scheduler_address
        return
    profile = getattr(load_profile(settings), role)
    _share_api_url_with_workers()
    if settings.kind == "local":
        from distributed import LocalCluster

        options = {"dashboard_address": None, **profile.cluster}
        with LocalCluster(**options) as cluster:
            yield cluster.scheduler_address
        return
    try:
        cluster = _jobqueue_cluster(settings.kind, profile.cluster)
    except (TypeError, ValueError) as error:
        raise ClusterError(f"{settings.kind} profile {role}.cluster: {error}") from None
    try:
        _start(cluster, profile, settings.kind)
        log.info("%s cluster for %s: %s", settings.kind, role, cluster.scheduler_address)
        yield cluster.scheduler_address
    finally:
        # Closing a cluster whose jobs never started can itself fail; the reason the
        # caller needs is the one already raised.
        with suppress(Exception):
            cluster.close()


def _share_api_url_with_workers() -> None:
    """Worker processes (and SLURM jobs, which export the caller's environment) read the
    Prefect API URL from the environment; the flow may have it only in its settings."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if url and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = url


def capacity(settings: ClusterSettings, role: Role, address: str) -> int:
    """Runs the cluster can do at once: from the profile (local: workers × threads per
    worker; SLURM/PBS: jobs, or the adapt maximum, × cores per job), or for an existing
    scheduler the threads of the workers it has now."""
    if settings.kind == "address":
        from distributed import Client

        with Client(address, timeout=30, set_as_default=False) as client:
            workers = client.scheduler_info().get("workers", {}).values()
            return max(1, sum(worker.get("nthreads", 1) for worker in workers))
    profile = getattr(load_profile(settings), role)
    options = profile.cluster
    if settings.kind == "local":
        workers = options.get("n_workers") or os.cpu_count() or 1
        return max(1, workers * (options.get("threads_per_worker") or 1))
    scale = profile.scale
    jobs = scale.adapt.maximum_jobs if scale.adapt is not None else scale.jobs or 1
    return max(1, jobs * int(options.get("cores") or 1))


def shares_cluster(settings: ClusterSettings) -> bool:
    """Whether references and trials run on one cluster: an existing scheduler, or a
    profile whose two roles ask for the same thing (the local default). Otherwise the
    reference jobs are a cluster of their own, alive beside the trials' while needed."""
    if settings.kind == "address":
        return True
    profile = load_profile(settings)
    return profile.reference == profile.trials


def runner_for(address: str) -> DaskTaskRunner:
    from prefect_dask import DaskTaskRunner  # (here: checking a profile needs no Prefect)

    return DaskTaskRunner(address=address)
