"""References streaming into studies: each problem's reference as soon as it is ready.

A campaign does not wait for every reference before it starts tuning. ``ReferenceSupply``
looks up the cached references (``ref.json``) at once; a problem whose reference is
missing computes it in its own ``compute-references`` subflow, and its studies start the
moment that returns, so a slow reference delays only its own problem.

Where the references run:

- every reference cached: nowhere, no cluster is started for them;
- the profile's two roles alike (the local default) or an existing scheduler: on the
  trials' cluster, each reference holding one of the campaign's slots while it runs, so
  references and trials together never ask for more than the cluster has;
- otherwise (bigger reference jobs on SLURM/PBS): on a reference cluster started beside the
  trials' and stopped as soon as the last missing reference is in, not at the end of the
  campaign, so its jobs are not held idle.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from prefect import get_run_logger

from flows.cluster import dask_cluster, runner_for, shares_cluster
from flows.reference import cached_reference, compute_references
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.settings import Settings
from lambda_hat.tuning.slots import TrialSlots


class ReferenceSupply:
    """Use as a context manager around the campaign; ``get(index, ...)`` from the
    problem's own thread blocks only until that problem's reference is ready."""

    def __init__(
        self,
        specs: list[dict[str, Any]],
        config: ReferenceConfig,
        refresh: bool,
        settings: Settings,
    ):
        self._specs = specs
        self._config = config.model_dump(mode="json")
        self._refresh = refresh
        self._settings = settings
        artifacts = settings.artifacts_dir.resolve()
        self._ready: dict[int, dict[str, Any]] = {}
        if not refresh:
            for index, spec in enumerate(specs):
                reference = cached_reference(spec, self._config, artifacts)
                if reference is not None:
                    self._ready[index] = reference
        self._pending = len(specs) - len(self._ready)
        self._lock = threading.Lock()
        self._cluster = ExitStack()
        self._own_address: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._early: dict[int, Future] = {}

    @property
    def missing(self) -> int:
        """References to compute (all, with ``refresh``)."""
        return len(self._specs) - len(self._ready)

    def __enter__(self) -> ReferenceSupply:
        logger = get_run_logger()
        if self._pending == 0:
            logger.info(
                "all %d references are cached: no reference cluster started", len(self._specs)
            )
        elif shares_cluster(self._settings.cluster):
            logger.info("%d references to compute, on the trials' cluster", self._pending)
        else:
            self._own_address = self._cluster.enter_context(
                dask_cluster(self._settings.cluster, role="reference")
            )
            logger.info("%d references to compute, on the reference cluster", self._pending)
            # Started now, not when each problem's thread asks: the reference jobs may hold
            # resources the trials' jobs wait for, and are released when the last is in.
            self._pool = ThreadPoolExecutor(self._pending, thread_name_prefix="reference")
            for index in range(len(self._specs)):
                if index not in self._ready:
                    context = contextvars.copy_context()
                    self._early[index] = self._pool.submit(context.run, self._compute, index, None)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._cluster.close()

    def get(self, index: int, trials_address: str, slots: TrialSlots | None) -> dict[str, Any]:
        """The reference of problem ``index``: cached, or computed now (blocking)."""
        if index in self._ready:
            return self._ready[index]
        if index in self._early:
            return self._early[index].result()
        return self._compute(index, slots, trials_address)

    def _compute(
        self, index: int, slots: TrialSlots | None, trials_address: str | None = None
    ) -> dict[str, Any]:
        spec = self._specs[index]
        shared = self._own_address is None
        key = f"reference:{spec['name']}"
        try:
            if shared and slots is not None:
                _hold_slot(slots, key)
            subflow = compute_references.with_options(
                task_runner=runner_for(self._own_address or trials_address),
                flow_run_name=f"reference-{spec['name']}",
            )
            (reference,) = subflow(
                [spec],
                self._config,
                refresh=self._refresh,
                budget_sec=self._settings.budgets.reference_sec,
            )
        finally:
            if shared and slots is not None:
                slots.leave(key)
            self._one_less()
        self._ready[index] = reference
        return reference

    def references(self) -> list[dict[str, Any] | None]:
        """Every problem's reference, in the problem set's order (None: not computed)."""
        return [self._ready.get(index) for index in range(len(self._specs))]

    def _one_less(self) -> None:
        # The last missing reference is in: stop the reference jobs now.
        with self._lock:
            self._pending -= 1
            last = self._pending == 0
        if last and self._own_address is not None:
            self._cluster.close()
            get_run_logger().info("all references are in: the reference cluster is stopped")


def _hold_slot(slots: TrialSlots, key: str) -> None:
    """One of the campaign's slots for a reference on the shared cluster (waits its turn,
    like a study's trial would)."""
    slots.join(key)
    while not slots.take(key):
        slots.wait(1.0)
