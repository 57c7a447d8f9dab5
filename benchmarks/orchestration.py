"""Orchestration overhead: the tune flow against a bare Optuna loop on the same runs.

    .venv/bin/python benchmarks/orchestration.py           # local part, ~3 min on 2 cores
    .venv/bin/python benchmarks/orchestration.py --slurm   # and the local SLURM (root), +5 min

Every run is budget-bound: SGLD with far more steps than fit, ``trial_sec`` = 5 s, so a
run lasts about 5 s whoever schedules it, and what differs is only the time between runs.

- **bare loop**: an Optuna ask/tell loop over a ``ProcessPoolExecutor`` of ``workers``
  processes calling the same ``run_trial`` on the same built problems; no Prefect, no
  Dask, no Parquet. What the cluster could do.
- **flow (local)**: ``tune`` on the local profile (2 worker processes), two studies (the
  smoke problems × SGLD) at once, references cached beforehand, in this process against a
  local Prefect server.
- **flow (SLURM)**, with ``--slurm``: ``python flows/tune.py`` on the single-node SLURM of
  ``deployments/slurm-local.sh`` with 8 one-core jobs and 4 studies (Postgres storage).

Measured from each run's own start and finish times (``runs.parquet``, or the bare loop's
returns): utilisation = busy run time / (workers × span from the first start to the last
finish); gap = on one worker, the time from a run's finish to that worker's next start
(median and p90); startup = from the call to the first run's start (references cached).
Targets (issue 14): flow utilisation ≥ 0.95 of the bare loop's, gap median ≤ 0.2 s,
startup ≤ 10 s on the local profile; utilisation ≥ 0.9 on SLURM with 8 workers.

Results: ``benchmarks/results/orchestration.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).parent / "results" / "orchestration.json"
REPO = Path(__file__).resolve().parents[1]
BUDGET_SEC = 5.0
SGLD_FIXED = {
    "num_steps": 10_000_000,
    "burn_in_frac": 0.0,
    "thinning": 200,
    "num_chains": 2,
    "batch_size": 32,
}
METHODS_YAML = f"""
methods:
  sgld:
    fixed: {json.dumps(SGLD_FIXED)}
    space:
      step_size: {{type: float, low: 1.0e-5, high: 3.0e-4, log: true}}
"""
SMALL_REFERENCE = {"reference_warmup": 100, "reference_draws": 200}


def measure(spans: list[tuple[str, float, float]], workers: int, t0: float) -> dict[str, Any]:
    """``spans``: (worker, start, finish) of every run. See the module docstring."""
    first = min(start for _, start, _ in spans)
    last = max(end for _, _, end in spans)
    busy = sum(end - start for _, start, end in spans)
    gaps: list[float] = []
    by_worker: dict[str, list[tuple[float, float]]] = {}
    for worker, start, end in spans:
        by_worker.setdefault(worker, []).append((start, end))
    for runs in by_worker.values():
        runs.sort()
        gaps += [later[0] - earlier[1] for earlier, later in zip(runs, runs[1:], strict=False)]
    gaps.sort()
    return {
        "runs": len(spans),
        "workers": workers,
        "workers_used": len(by_worker),
        "run_sec_median": round(statistics.median(end - start for _, start, end in spans), 3),
        "span_sec": round(last - first, 2),
        "utilisation": round(busy / (workers * (last - first)), 4),
        "gap_sec_median": round(statistics.median(gaps), 4) if gaps else None,
        "gap_sec_p90": round(gaps[int(0.9 * (len(gaps) - 1))], 4) if gaps else None,
        "startup_sec": round(first - t0, 2),
    }


def _bare_run(spec: dict, config: dict, seed: int, results_dir: str, jax_cache: str) -> tuple:
    """One run in a pool process: the same problem cache and ``run_trial`` as a task."""
    from lambda_hat.samplers.run_method import run_trial
    from tasks.worker import problem_for

    started = time.time()
    problem = problem_for(spec, results_dir, jax_cache)
    result = run_trial(problem, "sgld", config, budget_sec=BUDGET_SEC, seed=seed)
    kept = result.status in ("ok", "budget_exhausted") and result.llc_hat is not None
    return f"{os.getpid()}", started, time.time(), "estimate" if kept else result.status


def bare_loop(specs: list[dict], runs: int, workers: int, paths: dict[str, str]) -> dict:
    """Optuna ask/tell with ``workers`` runs in flight, refilled as each one finishes."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    spans, statuses, in_flight = [], [], {}
    t0 = time.time()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        asked = 0
        while asked < runs or in_flight:
            while asked < runs and len(in_flight) < workers:
                trial = study.ask()
                step = trial.suggest_float("step_size", 1e-5, 3e-4, log=True)
                config = {**SGLD_FIXED, "step_size": step}
                spec = specs[asked % len(specs)]
                future = pool.submit(
                    _bare_run, spec, config, asked, paths["results_dir"], paths["jax_cache_dir"]
                )
                in_flight[future] = trial
                asked += 1
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                worker, start, end, status = future.result()
                spans.append((worker, start, end))
                statuses.append(status)
                study.tell(in_flight.pop(future), end - start)
    return {**measure(spans, workers, t0), **_kept(statuses)}


def _kept(statuses: list[str]) -> dict[str, int]:
    """Runs that produced an estimate: a run that kept no draw is a different code path."""
    return {"runs_with_estimate": sum(1 for status in statuses if status == "estimate")}


def _smoke_specs(count: int) -> list[dict]:
    from lambda_hat.problems.specs import load_problem_set

    base = load_problem_set("smoke").problems
    specs = []
    for index in range(count):  # distinct names and seeds: each its own study
        spec = base[index % len(base)].model_dump(mode="json")
        spec.update(name=f"{spec['name']}_{index}", seed=100 + index)
        specs.append(spec)
    return specs


def local_part(n_trials: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="lambda-hat-orchestration-"))
    os.environ.update(
        LAMBDA_HAT_RESULTS_DIR=str(tmp / "results"),
        LAMBDA_HAT_ARTIFACTS_DIR=str(tmp / "artifacts"),
        LAMBDA_HAT_BUDGETS__TRIAL_SEC=str(BUDGET_SEC),
        LAMBDA_HAT_CLUSTER__KIND="local",
    )
    from flows import terminal
    from flows.reference import reference, storage_paths
    from flows.tune import tune
    from lambda_hat.results.tables import read_rows
    from lambda_hat.settings import Settings

    specs = _smoke_specs(2)
    problems = tmp / "problems.yaml"
    problems.write_text(json.dumps({"problems": specs}))
    (tmp / "methods.yaml").write_text(METHODS_YAML)
    with terminal.prefect_api():
        reference(
            problems=str(problems),
            num_warmup=SMALL_REFERENCE["reference_warmup"],
            num_draws=SMALL_REFERENCE["reference_draws"],
        )
        t0 = time.time()
        tune(
            problems=str(problems), methods=["sgld"], n_trials=n_trials, batch=2, repeats=1,
            pruner="none", validate_top_k=0, methods_file=str(tmp / "methods.yaml"),
            **SMALL_REFERENCE,
        )  # fmt: skip
    rows = read_rows(tmp / "results" / "runs.parquet")
    spans = [
        (f"{row['hostname']}:{row['worker_pid']}", row["started_at"], row["finished_at"])
        for row in rows
    ]
    flow = {
        **measure(spans, 2, t0),
        "runs_with_estimate": sum(1 for row in rows if row["llc_hat"] is not None),
    }
    bare = bare_loop(specs, len(rows), 2, storage_paths(Settings()))
    return {
        "flow": flow,
        "bare_loop": bare,
        "utilisation_ratio": round(flow["utilisation"] / bare["utilisation"], 4),
    }


def slurm_part(jobs: int, studies: int, n_trials: int) -> dict[str, Any]:
    from lambda_hat.results.tables import read_rows
    from tests.stack import real_stack, slurm_settings_env

    stack = real_stack(cpus=max(16, jobs), memory_mb=48000)
    env = next(stack)
    name = "orchestration-bench"
    try:
        with tempfile.TemporaryDirectory(prefix="lambda-hat-orchestration-slurm-") as tmp_name:
            tmp = Path(tmp_name)
            specs = _smoke_specs(studies)
            (tmp / "problems.yaml").write_text(json.dumps({"problems": specs}))
            (tmp / "methods.yaml").write_text(METHODS_YAML)
            role = (
                '  cluster: {{cores: 1, processes: 1, memory: 2GB, walltime: "00:30:00", '
                "job_name: {job}, interface: lo, log_directory: {logs}}}\n"
                "  scale: {{jobs: {jobs}}}\n  start_timeout_sec: 300\n"
            )
            logs = tmp / "logs"
            (tmp / "profile.yaml").write_text(
                "trials:\n"
                + role.format(job=name, logs=logs, jobs=jobs)
                + f"  start_workers: {jobs}\n"
                + "reference:\n"
                + role.format(job=f"{name}-ref", logs=logs, jobs=2)
            )
            # Each study may have twice its share of the workers in flight: one run
            # waiting behind each running one, as the campaign's slots allow.
            batch = -(-2 * jobs // studies)
            run_env = {
                **slurm_settings_env(env, tmp),
                "LAMBDA_HAT_BUDGETS__TRIAL_SEC": str(BUDGET_SEC),
            }
            argv = [
                sys.executable, "flows/tune.py", "--problems", str(tmp / "problems.yaml"),
                "--methods", "sgld", "--n-trials", str(n_trials),
                "--batch", str(batch), "--methods-file", str(tmp / "methods.yaml"),
                "--reference-warmup", "100", "--reference-draws", "200",
                "--repeats", "1", "--validate-top-k", "0",
            ]  # fmt: skip
            # References first (cached), so what is measured is the trials' phase.
            subprocess.run(
                [
                    sys.executable, "flows/reference.py", "--problems",
                    str(tmp / "problems.yaml"), "--num-warmup", "100", "--num-draws", "200",
                ],
                cwd=REPO, env=run_env, capture_output=True, text=True, timeout=1800, check=True,
            )  # fmt: skip
            t0 = time.time()
            out = subprocess.run(
                argv, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=1800
            )
            if out.returncode != 0:
                print(out.stdout[-3000:], out.stderr[-3000:], file=sys.stderr)
                return {"returncode": out.returncode}
            rows = read_rows(tmp / "results" / "runs.parquet")
            # The same runs on as many processes of this machine, for what its cores allow.
            paths = {"results_dir": str(tmp / "results"), "jax_cache_dir": str(REPO / ".jax_cache")}
            bare = bare_loop(specs, len(rows), jobs, paths)
    finally:
        stack.close()
    spans = [
        (f"{row['slurm_job_id']}:{row['worker_pid']}", row["started_at"], row["finished_at"])
        for row in rows
    ]
    return {
        **measure(spans, jobs, t0),
        "studies": studies,
        "runs_with_estimate": sum(1 for row in rows if row["llc_hat"] is not None),
        "batch": batch,
        "bare_loop_same_processes": bare,
        "note": "references cached beforehand; startup_sec is from the command, through "
        "the Prefect engine, SLURM job start and all workers joining",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=8, help="per study, local part")
    parser.add_argument("--slurm", action="store_true", help="also the local SLURM part")
    parser.add_argument("--skip-local", action="store_true", help="keep the last local part")
    parser.add_argument("--jobs", type=int, default=8, help="SLURM jobs (one worker each)")
    parser.add_argument("--studies", type=int, default=4, help="studies in the SLURM part")
    parser.add_argument("--slurm-trials", type=int, default=12, help="per study, SLURM part")
    args = parser.parse_args()
    report: dict[str, Any] = {"budget_sec": BUDGET_SEC, "cpus": os.cpu_count()}
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    if args.skip_local and "local" in previous:
        report["local"] = previous["local"]
    else:
        report["local"] = local_part(args.n_trials)
    print(json.dumps(report, indent=2), flush=True)
    if args.slurm:
        report["slurm"] = slurm_part(args.jobs, args.studies, args.slurm_trials)
    if not args.slurm and "slurm" in previous:
        report["slurm"] = previous["slurm"]  # keep the last SLURM measurement
    from lambda_hat.io import atomic_write_json

    atomic_write_json(OUT, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
