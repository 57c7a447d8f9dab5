"""One run (one seed of one configuration) as a Prefect task, cached by its run id; or
a group of runs of one configuration on one problem (validation's seeds) as one task.

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

from lambda_hat.ids import stable_hash, validate_id
from lambda_hat.io import atomic_write_json, read_json
from lambda_hat.problems.targets import Problem
from lambda_hat.samplers.configs import config_type_of, method_code_version
from lambda_hat.samplers.run_method import run_trial
from tasks.worker import problem_for, worker_info


def run_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    return f"run-{validate_id(parameters['run_id'])}"


# What both run tasks share: JSON results (nothing in the results dir is ever unpickled),
# and retries for infrastructure failures only (a failing run is a result, not a raise).
_RUN_TASK_OPTIONS: dict[str, Any] = {
    "persist_result": True,
    "result_serializer": "json",
    "retries": 2,
    "retry_delay_seconds": 5,
}


@task(
    name="run-method",
    task_run_name="{method}-{spec[name]}-{stage}-{run_id}",
    cache_key_fn=run_cache_key,
    **_RUN_TASK_OPTIONS,
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
    problem = problem_for(spec, results_dir, jax_cache_dir)
    return _run(problem, run_id, method, config, seed, budget_sec, artifacts_dir, stage)


def run_group_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    ids = [validate_id(run["run_id"]) for run in parameters["runs"]]
    return f"runs-{stable_hash(ids, 16)}"


@task(
    name="run-group",
    task_run_name="{method}-{spec[name]}-{stage}-{runs[0][run_id]}+{group_size}",
    cache_key_fn=run_group_cache_key,
    **_RUN_TASK_OPTIONS,
)
def run_group_task(
    runs: list[dict[str, Any]],
    spec: dict[str, Any],
    method: str,
    config: dict[str, Any],
    budget_sec: float,
    results_dir: str,
    artifacts_dir: str,
    jax_cache_dir: str,
    stage: str = "validation",
    group_size: int = 1,
) -> list[dict[str, Any]]:
    """Several runs of one configuration on one problem (``runs``: their ``run_id`` and
    ``seed``), one after the other in this task: one task run instead of len(runs), the
    compiled kernels shared. Each run writes its own files, as ``run_method_task`` does,
    so a task killed half-way keeps the runs it finished: run again, it reads them back
    from their ``metrics.json`` instead of computing them (``group_size``: the task run's
    name only)."""
    problem = problem_for(spec, results_dir, jax_cache_dir)
    out = []
    for run in runs:
        finished = _finished(problem.pid, method, run["run_id"], artifacts_dir)
        out.append(finished or _run(problem, run["run_id"], method, config, run["seed"],
                                    budget_sec, artifacts_dir, stage))  # fmt: skip
    return out


def _run_dir(artifacts_dir: str, pid: str, method: str, run_id: str) -> Path:
    config_type_of(method)  # a known method name: it becomes a path component
    return Path(artifacts_dir) / "runs" / pid / method / validate_id(run_id)


def _run(
    problem: Problem,
    run_id: str,
    method: str,
    config: dict[str, Any],
    seed: int,
    budget_sec: float,
    artifacts_dir: str,
    stage: str,
) -> dict[str, Any]:
    started = time.time()
    out_dir = _run_dir(artifacts_dir, problem.pid, method, run_id)
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


def _finished(pid: str, method: str, run_id: str, artifacts_dir: str) -> dict[str, Any] | None:
    """A run of this id that finished before (its manifest and metrics.json both readable,
    of this code version), as the task returned it then; else None."""
    out_dir = _run_dir(artifacts_dir, pid, method, run_id)
    manifest, metrics = read_json(out_dir / "manifest.json"), read_json(out_dir / "metrics.json")
    if not manifest or not metrics or manifest.get("run_id") != run_id:
        return None
    if manifest.get("code_version") != method_code_version(method):
        return None
    where = {key: manifest.get(key) for key in worker_info()}
    return {
        **metrics,
        "run_id": run_id,
        "pid": pid,
        "code_version": manifest["code_version"],
        "started_at": manifest["started_at"],
        "finished_at": (out_dir / "metrics.json").stat().st_mtime,
        **where,
    }
