"""A load campaign on the real stack: many trial workers (SLURM jobs × worker threads)
against one Postgres, while a poller samples ``pg_stat_activity``. Used at CI size by
tests/test_faults.py and at full size (≥ 32 workers) by benchmarks/load_slurm.py."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import optuna
import psycopg
from optuna.trial import TrialState

from lambda_hat.results.tables import read_rows
from lambda_hat.tuning.storage import counted, finished_trials
from tests.stack import REPO, slurm_settings_env, write_one_problem

PROFILE = """
trials:
  cluster: {{cores: {threads}, processes: 1, memory: 4GB, walltime: "00:30:00",
            job_name: {name}, interface: lo, log_directory: {logs}}}
  scale: {{jobs: {jobs}}}
  start_timeout_sec: 300
  start_workers: {jobs}
reference:
  cluster: {{cores: 1, processes: 1, memory: 4GB, walltime: "00:30:00",
            job_name: {name}-ref, interface: lo, log_directory: {logs}}}
  scale: {{jobs: 1}}
  start_timeout_sec: 300
"""
SHORT_TRIALS = """
methods:
  sgld:
    fixed: {{num_steps: {num_steps}, thinning: 4, num_chains: 2, batch_size: 32}}
    space:
      step_size: {{type: float, low: 1.0e-5, high: 3.0e-4, log: true}}
"""


class ConnectionPoller(threading.Thread):
    """Samples the number of connections to the storage database every 0.1 s."""

    def __init__(self, storage_url: str):
        super().__init__(daemon=True)
        self.url = storage_url.replace("postgresql+psycopg://", "postgresql://")
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self.stop.is_set():
                row = connection.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                self.samples.append(int(row[0]))
                time.sleep(0.1)


def run_load_campaign(
    stack: dict[str, str],
    tmp: Path,
    name: str,
    jobs: int,
    threads: int,
    n_trials: int,
    num_steps: int = 400,
) -> dict[str, Any]:
    """One study with ``jobs × threads`` trials in flight; returns the measurements and
    the checks (errors, duplicates, RUNNING trials, rows) as numbers."""
    pid = write_one_problem(tmp, name, zlib.crc32(name.encode()) % 1000)
    (tmp / "methods.yaml").write_text(SHORT_TRIALS.format(num_steps=num_steps))
    profile = PROFILE.format(threads=threads, jobs=jobs, name=name, logs=tmp / "logs")
    (tmp / "profile.yaml").write_text(profile)
    env = slurm_settings_env(stack, tmp)
    argv = [
        sys.executable, "flows/tune.py", "--problems", str(tmp / "problems.yaml"),
        "--methods", "sgld", "--n-trials", str(n_trials), "--batch", str(jobs * threads),
        "--methods-file", str(tmp / "methods.yaml"),
        "--reference-warmup", "100", "--reference-draws", "200",
        "--repeats", "1", "--validate-top-k", "0",  # one run per trial: load is in runs
    ]  # fmt: skip
    poller = ConnectionPoller(stack["LAMBDA_HAT_OPTUNA_STORAGE"])
    poller.start()
    started = time.monotonic()
    try:
        out = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    finally:
        poller.stop.set()
        poller.join(5)
        subprocess.run(["scancel", "--name", name], env=env, check=False)
        subprocess.run(["scancel", "--name", f"{name}-ref"], env=env, check=False)
    (tmp / "tune.log").write_text(out.stdout + out.stderr)
    study = optuna.load_study(study_name=f"{pid}:sgld", storage=stack["LAMBDA_HAT_OPTUNA_STORAGE"])
    told = [t for t in study.trials if t.state.is_finished() and counted(t)]
    rows = read_rows(tmp / "results" / "runs.parquet") if out.returncode == 0 else []
    latency = _latencies(out.stdout + out.stderr)
    starts = sorted((row["started_at"], row["finished_at"]) for row in rows)
    return {
        "returncode": out.returncode,
        "output_tail": (out.stdout + out.stderr)[-3000:],
        "workers": jobs * threads,
        "slurm_jobs": jobs,
        "threads_per_job": threads,
        "n_trials": n_trials,
        "sgld_num_steps": num_steps,
        "wall_sec": round(time.monotonic() - started, 1),
        "trials_finished": finished_trials(study),
        "trials_running": len(study.get_trials(states=(TrialState.RUNNING,))),
        "trial_errors": sum(1 for t in told if t.user_attrs["status"] != "ok"),
        "duplicate_params": len(told) - len({json.dumps(t.params, sort_keys=True) for t in told}),
        "duplicate_run_ids": len(rows) - len({row["run_id"] for row in rows}),
        "rows": len(rows),
        "distinct_slurm_jobs": len({row["slurm_job_id"] for row in rows}),
        "peak_concurrent_trials": _peak_overlap(starts),
        "pg_connections_peak": max(poller.samples, default=0),
        "pg_connections_median": statistics.median(poller.samples) if poller.samples else 0,
        "ask_submit_sec_median": latency[0],
        "ask_submit_sec_max": latency[1],
    }


def _latencies(log: str) -> tuple[float | None, float | None]:
    """From the flow's log line ``ask→submit latency median X s, max Y s``."""
    for line in log.splitlines():
        if "ask→submit latency median" in line:
            words = line.split("median ")[1].split()
            return float(words[0]), float(words[3])
    return None, None


def _peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most trials that were running at the same moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = running = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
