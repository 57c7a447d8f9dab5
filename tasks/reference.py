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

import yaml
from prefect import task
from prefect.context import TaskRunContext

from lambda_hat.io import atomic_write_bytes, atomic_write_json
from lambda_hat.problems import ProblemSpec
from lambda_hat.runners.hmc_reference import ReferenceConfig, reference_code_version, run
from tasks.worker import problem_for, worker_info


def reference_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    pid = ProblemSpec.model_validate(parameters["spec"]).pid
    config = ReferenceConfig.model_validate(parameters["config"])
    return f"hmc-reference-{pid}-{reference_code_version(config)}"


@task(
    name="hmc-reference",
    task_run_name="hmc-reference-{spec[name]}",
    cache_key_fn=reference_cache_key,
    persist_result=True,
    result_serializer="json",  # nothing in the results dir is ever unpickled
    retries=2,
    retry_delay_seconds=10,
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
    problem_spec = ProblemSpec.model_validate(spec)
    problem = problem_for(spec, results_dir, jax_cache_dir)
    out_dir = Path(artifacts_dir) / "problems" / problem.pid
    atomic_write_bytes(
        out_dir / "spec.yaml", yaml.safe_dump(problem_spec.model_dump(mode="json")).encode()
    )
    started = time.time()
    result = run(problem, ReferenceConfig.model_validate(config), budget_sec=budget_sec)
    record = {
        **result.model_dump(mode="json"),
        "name": problem_spec.name,
        "hmc_run_id": uuid.uuid4().hex,
        "computed_at": started,
        **worker_info(),
    }
    if result.convergence is not None:  # the report plots it; small (≤ 400 points a chain)
        atomic_write_json(out_dir / "convergence.json", result.convergence)
    atomic_write_json(out_dir / "ref.json", record)
    return record
