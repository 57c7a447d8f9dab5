"""One run (one seed of one configuration) as a Prefect task, cached by its run id.

Equal (pid, method, config, seed, budget, code version) means equal run id, so an
identical run is never computed twice (a resumed study or a repeated validation reuses
finished work). Retries cover infrastructure failures (a lost worker, a killed job):
``run_trial`` turns a diverged or failing run into a result, so those are never retried.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from lambda_hat.ids import validate_id
from lambda_hat.io import atomic_write_json
from lambda_hat.samplers.configs import config_type_of, method_code_version
from lambda_hat.samplers.run_method import run_trial
from tasks.worker import problem_for, worker_info


def run_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"run-{validate_id(parameters['run_id'])}"


@task(
    name="run-method",
    task_run_name="{method}-{spec[name]}-{stage}-{run_id}",
    cache_key_fn=run_cache_key,
    persist_result=True,
    result_serializer="json",  # nothing in the results dir is ever unpickled
    retries=2,
    retry_delay_seconds=5,
)
def run_method_task(
    run_id: str,
    spec: dict[str, Any],
    method: str,
    config: dict[str, Any],
    seed: int,
    budget_sec: float,
    results_dir: str,
    artifacts_dir: str,
    jax_cache_dir: str,
    stage: str = "search",
) -> dict[str, Any]:
    """Run one run and write ``<artifacts>/runs/<pid>/<method>/<run_id>/`` with
    ``manifest.json`` (what was asked) and ``metrics.json`` (what came out)."""
    started = time.time()
    problem = problem_for(spec, results_dir, jax_cache_dir)
    config_type_of(method)  # a known method name: it becomes a path component
    out_dir = Path(artifacts_dir) / "runs" / problem.pid / method / validate_id(run_id)
    where = worker_info()
    manifest = {
        "run_id": run_id,
        "stage": stage,
        "pid": problem.pid,
        "method": method,
        "config": config,
        "seed": seed,
        "budget_sec": budget_sec,
        "code_version": method_code_version(method),
        "started_at": started,
        **where,
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    result = run_trial(problem, method, config, budget_sec=budget_sec, seed=seed, out_dir=out_dir)
    return {
        **result.model_dump(mode="json"),
        "run_id": run_id,
        "pid": problem.pid,
        "code_version": manifest["code_version"],
        "started_at": started,
        "finished_at": time.time(),
        **where,
    }
