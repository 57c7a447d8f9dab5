"""The main job's campaign on two code paths, side by side, on this machine.

    .venv/bin/python benchmarks/main_job_throughput.py                  # ~25 min on 2 cores
    .venv/bin/python benchmarks/main_job_throughput.py --baseline ec9bc91 --candidate HEAD

Clones the repository twice (``--baseline``: the code before issue 26, whose full-data
work read the rows; ``--candidate``: this code) and runs the *same* campaign in each,
one after the other: ``python flows/tune.py`` with the main job's problems, methods,
trials, repeats and validation (``--args``; default: the laptop defaults of
``scripts/run.sh`` before issue 26). Each arm gets its own results directory, JAX
compilation cache and Prefect home (so its local Prefect server's database counts only
its own task runs). Both arms use this checkout's virtual environment.

Per arm: wall time of the flow command, summed run time (``runtime_sec`` of every row of
``runs.parquet``), utilisation (summed run time / (wall time × Dask workers)), task runs
created (rows of the Prefect database's ``task_run`` table), and each method's run times
(median and total, search and validation). Results: ``benchmarks/results/
main_job_throughput.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from lambda_hat.io import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "main_job_throughput.json"
# scripts/run.sh's laptop defaults before issue 26: the campaign both arms run.
MAIN_JOB = "--n-trials 4 --repeats 3 --validate-top-k 1 --validation-seeds 5"


def clone(rev: str, into: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(REPO), str(into)], check=True)
    subprocess.run(["git", "-C", str(into), "checkout", "-q", rev], check=True)
    return into


def task_runs(prefect_home: Path) -> int | None:
    database = prefect_home / "prefect.db"
    if not database.exists():
        return None
    with sqlite3.connect(database) as connection:
        return connection.execute("select count(*) from task_run").fetchone()[0]


def run_times(rows: list[dict]) -> dict:
    """Each method's run times by stage: count, median and total seconds."""
    out: dict[str, dict] = {}
    for method in sorted({row["method"] for row in rows}):
        for stage in ("search", "validation"):
            times = [
                row["runtime_sec"]
                for row in rows
                if row["method"] == method and row["stage"] == stage and row["runtime_sec"]
            ]
            if times:
                out.setdefault(method, {})[stage] = {
                    "runs": len(times),
                    "median_sec": round(statistics.median(times), 3),
                    "total_sec": round(sum(times), 1),
                }
    return out


def run_arm(name: str, rev: str, args: list[str], work: Path, workers: int) -> dict:
    checkout = clone(rev, work / name)
    commit = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    home = work / f"{name}-prefect"
    env = {
        **os.environ,
        "PYTHONPATH": str(checkout),  # this arm's lambda_hat, flows and tasks
        "PREFECT_HOME": str(home),
    }
    env.pop("PREFECT_API_URL", None)  # each arm starts its own local server
    print(f"[{name}] {commit}: python flows/tune.py {' '.join(args)}", flush=True)
    started = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        done = subprocess.run(
            [sys.executable, "flows/tune.py", *args], cwd=checkout, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"[{name}] flows/tune.py exited {done.returncode}: see {work}/{name}.log")
    rows = pq.read_table(checkout / "results" / "runs.parquet").to_pylist()
    summed = sum(row["runtime_sec"] or 0.0 for row in rows)
    result = {
        "rev": rev,
        "commit": commit,
        "wall_sec": round(wall, 1),
        "runs": len(rows),
        "summed_run_sec": round(summed, 1),
        "utilisation": round(summed / (wall * workers), 3),
        "task_runs": task_runs(home),
        "run_times": run_times(rows),
    }
    print(f"[{name}] {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="ec9bc91", help="git rev of today's code path")
    parser.add_argument("--candidate", default="HEAD", help="git rev of the new code path")
    parser.add_argument("--args", default=MAIN_JOB, help="flows/tune.py arguments (both arms)")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1,
        help="the local cluster's run slots, for the utilisation (default: the CPU count, "
        "as the local profile uses)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=OUT)
    options = parser.parse_args()
    args = options.args.split()
    # Kept if an arm fails (its log is there), removed after a complete benchmark.
    work = Path(tempfile.mkdtemp(prefix="lambda-hat-throughput-"))
    arms = {
        "baseline": run_arm("baseline", options.baseline, args, work, options.workers),
        "candidate": run_arm("candidate", options.candidate, args, work, options.workers),
    }
    shutil.rmtree(work, ignore_errors=True)
    base, new = arms["baseline"], arms["candidate"]
    atomic_write_json(
        options.out,
        {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "args": args,
            "workers": options.workers,
            "arms": arms,
            "wall_ratio": round(new["wall_sec"] / base["wall_sec"], 3),
            "target_wall_ratio": 0.5,
        },
    )
    ratio = new["wall_sec"] / base["wall_sec"]
    print(f"wall time ratio {ratio:.2f} (target ≤ 0.5) → {options.out}")


if __name__ == "__main__":
    main()
