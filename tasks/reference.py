"""The HMC reference as a Prefect task, cached by problem and reference config.

The cache key is ``pid + reference code version`` (package version + a hash of the
reference config), not Prefect's default run-scoped policy, and the result is persisted
under ``<results_dir>/prefect-results``: a later flow run, or another worker on the same
filesystem, gets the stored reference instead of running HMC again. ``refresh_cache=True``
(the nightly refresh) recomputes and overwrites it.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from filelock import FileLock
from prefect import task
from prefect.context import TaskRunContext

from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.reference.pool import batches_of, next_seed, pool
from lambda_hat.reference.record import (
    read_reference,
    reference_code_version,
    reference_dir,
    save_record,
    write_reference,
)
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run, sample
from lambda_hat.samplers.reference_shards import load_shard, save_shard, shard_config, shard_path
from lambda_hat.samplers.reference_summary import summarize
from tasks.worker import problem_for, worker_info

# Every task that computes (part of) a reference: results persisted as JSON, retried twice.
_REFERENCE_TASK_OPTIONS = {
    "persist_result": True,
    "result_serializer": "json",  # nothing in the results dir is ever unpickled
    "retries": 2,
    "retry_delay_seconds": 10,
}


def reference_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    pid = ProblemSpec.model_validate(parameters["spec"]).pid
    config = ReferenceConfig.model_validate(parameters["config"])
    return f"hmc-reference-{pid}-{reference_code_version(config)}"


@task(
    name="hmc-reference",
    task_run_name="hmc-reference-{spec[name]}",
    cache_key_fn=reference_cache_key,
    **_REFERENCE_TASK_OPTIONS,
)
def hmc_reference(
    spec: dict[str, Any],
    config: dict[str, Any],
    results_dir: str,
    artifacts_dir: str,
    jax_cache_dir: str,
    budget_sec: float | None = None,
) -> dict[str, Any]:
    """Compute the reference of one problem and write
    ``<artifacts_dir>/problems/<pid>/{spec.yaml, ref.json, convergence.json}``; returns
    ref.json's fields plus ``hmc_run_id`` (new for every computation, so a cache hit is
    recognisable) and where it ran."""
    problem = problem_for(spec, results_dir, jax_cache_dir)
    started = time.time()
    result = run(problem, ReferenceConfig.model_validate(config), budget_sec=budget_sec)
    return write_reference(
        Path(artifacts_dir), ProblemSpec.model_validate(spec), result,
        hmc_run_id=uuid.uuid4().hex, computed_at=started, **worker_info(),
    )  # fmt: skip


def shard_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"{reference_cache_key(context, parameters)}-shard-{int(parameters['index'])}"


@task(
    name="hmc-reference-shard",
    task_run_name="hmc-reference-{spec[name]}-shard-{index}",
    cache_key_fn=shard_cache_key,
    **_REFERENCE_TASK_OPTIONS,
)
def hmc_reference_shard(
    spec: dict[str, Any],
    config: dict[str, Any],
    index: int,
    results_dir: str,
    artifacts_dir: str,
    jax_cache_dir: str,
    budget_sec: float | None = None,
) -> str:
    """Shard ``index`` of a sharded reference (``lambda_hat.samplers.reference_shards``):
    its chains sampled and their draws written; returns the file's path."""
    problem = problem_for(spec, results_dir, jax_cache_dir)
    base = ReferenceConfig.model_validate(config)
    part = sample(problem, shard_config(base, index), budget_sec=budget_sec)
    path = shard_path(Path(artifacts_dir), problem.pid, base, index)
    save_shard(path, part)
    return str(path)


@task(
    name="hmc-reference-pool",
    task_run_name="hmc-reference-{spec[name]}",
    cache_key_fn=reference_cache_key,  # the same key as an unsharded reference's task
    **_REFERENCE_TASK_OPTIONS,
)
def pool_reference_shards(
    spec: dict[str, Any],
    config: dict[str, Any],
    shard_paths: list[str],
    results_dir: str,
    artifacts_dir: str,
    jax_cache_dir: str,
    budget_sec: float | None = None,
) -> dict[str, Any]:
    """The shards' chains pooled into one reference, written like ``hmc_reference``'s."""
    problem = problem_for(spec, results_dir, jax_cache_dir)
    started = time.time()
    parts = [load_shard(Path(path)) for path in shard_paths]
    result = summarize(problem, ReferenceConfig.model_validate(config), parts)
    return write_reference(
        Path(artifacts_dir), ProblemSpec.model_validate(spec), result,
        hmc_run_id=uuid.uuid4().hex, computed_at=started, **worker_info(),
    )  # fmt: skip


@task(name="extend-reference", task_run_name="extend-reference-{spec[name]}", retries=2)
def extend_reference(
    spec: dict[str, Any],
    config: dict[str, Any],
    results_dir: str,
    artifacts_dir: str,
    jax_cache_dir: str,
    budget_sec: float | None = None,
) -> dict[str, Any]:
    """One more batch of chains (same settings, a seed no batch has used) pooled into the
    problem's ref.json (``lambda_hat.reference.pool``): with k equal batches its SE is the
    first's over √k. The read, pool and write hold a file lock: two extensions at once
    both land, and one that sampled a seed already pooled is dropped, not counted twice."""
    problem = problem_for(spec, results_dir, jax_cache_dir)
    path = reference_dir(Path(artifacts_dir), problem.pid) / "ref.json"
    base = ReferenceConfig.model_validate(config)
    seed = next_seed(read_reference(Path(artifacts_dir), problem.pid), base.seed)
    started = time.time()
    extra = run(problem, base.model_copy(update={"seed": seed}), budget_sec=budget_sec)
    with FileLock(f"{path}.lock"):
        current = read_reference(Path(artifacts_dir), problem.pid)
        if seed in {batch["seed"] for batch in batches_of(current, base.seed)}:
            # Another extension sampled this seed meanwhile: the same draws (same settings,
            # same seed), so pooling them again would fake precision.
            return current
        record = pool(current, extra.model_dump(mode="json"), seed)
        record.update(hmc_run_id=uuid.uuid4().hex, extended_at=started, **worker_info())
        save_record(Path(artifacts_dir), record)
    return record
