"""Faults on the real stack (issue 6): a trial's SLURM job is killed mid-trial, the flow
process is SIGKILLed and run again, Postgres restarts mid-run or stays down. Each campaign
is `python flows/tune.py` exactly as a user runs it, against the session's SLURM, Postgres
and Prefect server (tests/stack.py)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from lambda_hat.results.tables import read_rows
from lambda_hat.samplers.chunks import FINISH_SEC
from lambda_hat.tuning.storage import counted, finished_trials

from .conftest import sgld_methods
from .load import run_load_campaign
from .stack import PASSWORD, REPO, sh, skip_without_stack, slurm_settings_env, write_one_problem

pytestmark = skip_without_stack

PROFILE = """
trials:
  cluster: {{cores: 1, processes: 1, memory: 4GB, walltime: "00:20:00",
            job_name: {name}, interface: lo, log_directory: {logs}}}
  scale: {{jobs: 3}}
  start_timeout_sec: 120
reference:
  cluster: {{cores: 1, processes: 1, memory: 4GB, walltime: "00:20:00",
            job_name: {name}-ref, interface: lo, log_directory: {logs}}}
  scale: {{jobs: 1}}
  start_timeout_sec: 120
"""
# Trials of a few seconds: long enough to be killed in the middle.
METHODS = sgld_methods(15000, 1.0e-5, 3.0e-4, thinning=10)


class Campaign:
    """One study (its own problem, so its own pid) run with `python flows/tune.py`."""

    def __init__(
        self,
        stack: dict[str, str],
        tmp_path: Path,
        name: str,
        data_seed: int,
        methods: str = METHODS,
    ):
        (tmp_path / "methods.yaml").write_text(methods)
        (tmp_path / "profile.yaml").write_text(PROFILE.format(name=name, logs=tmp_path / "logs"))
        self.pid = write_one_problem(tmp_path, name, data_seed)
        self.tmp, self.name, self.storage = tmp_path, name, stack["LAMBDA_HAT_OPTUNA_STORAGE"]
        self.parquet = tmp_path / "results" / "runs.parquet"
        self.runs = tmp_path / "artifacts" / "runs" / self.pid / "sgld"
        self.env = slurm_settings_env(stack, tmp_path)

    def start(self, n_trials: int, batch: int, log: str, **env: str) -> subprocess.Popen:
        argv = [
            sys.executable, "flows/tune.py",
            "--problems", str(self.tmp / "problems.yaml"),
            "--methods", "sgld",
            "--n-trials", str(n_trials),
            "--batch", str(batch),
            "--methods-file", str(self.tmp / "methods.yaml"),
            "--reference-warmup", "100",
            "--reference-draws", "200",
            # One run per trial, no validation: these faults are about runs and trials.
            "--repeats", "1",
            "--validate-top-k", "0",
        ]  # fmt: skip
        output = open(self.tmp / log, "w")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(
            argv, cwd=REPO, env={**self.env, **env}, stdout=output, stderr=subprocess.STDOUT
        )

    def finish(self, process: subprocess.Popen, log: str, timeout: float = 420) -> str:
        try:
            process.wait(timeout=timeout)
        finally:
            process.kill()
        return (self.tmp / log).read_text()

    def enqueue(self, params: dict) -> None:
        """A trial the study must run first (before the flow starts)."""
        name = f"{self.pid}:sgld"
        study = optuna.create_study(study_name=name, storage=self.storage, load_if_exists=True)
        study.enqueue_trial(params)

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=f"{self.pid}:sgld", storage=self.storage)

    def rows(self) -> list[dict]:
        # (the file and the part files a running flow writes: read_rows sees both)
        return read_rows(self.parquet)

    def running_trials(self) -> list[dict]:
        """Trials that started on a worker and have not written metrics.json yet."""
        started = [json.loads(p.read_text()) for p in self.runs.glob("*/manifest.json")]
        return [m for m in started if not (self.runs / m["run_id"] / "metrics.json").exists()]

    def cancel_jobs(self) -> None:
        subprocess.run(["scancel", "--name", self.name], env=self.env, check=False)
        subprocess.run(["scancel", "--name", f"{self.name}-ref"], env=self.env, check=False)

    def assert_clean_study(self, n_trials: int) -> list[dict]:
        """n_trials told, none RUNNING, exactly one Parquet row per run (one run a trial)."""
        study = self.study()
        assert finished_trials(study) == n_trials
        assert not study.get_trials(states=(TrialState.RUNNING,))
        rows = self.rows()
        told = {
            t.user_attrs["run_ids"][0] for t in study.trials if t.state.is_finished() and counted(t)
        }
        assert {row["run_id"] for row in rows} == told
        assert len(rows) == len(told)
        return rows


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_killed_trial_job_is_rerun_on_another_worker(stack, tmp_path):
    campaign = Campaign(stack, tmp_path, "fault-scancel", data_seed=101)
    process = campaign.start(n_trials=4, batch=2, log="tune.log")
    try:
        victim = wait_for(campaign.running_trials, 300, "a trial to start on a SLURM job")[0]
        sh("scancel", victim["slurm_job_id"], env=campaign.env)
        output = campaign.finish(process, "tune.log")
    finally:
        process.kill()
        campaign.cancel_jobs()
    assert process.returncode == 0, output[-3000:]
    rows = campaign.assert_clean_study(4)
    rerun = [row for row in rows if row["run_id"] == victim["run_id"]]
    assert len(rerun) == 1 and rerun[0]["status"] == "ok", rerun
    assert rerun[0]["slurm_job_id"] != victim["slurm_job_id"]  # finished on another job


def test_sigkilled_flow_then_the_same_command_finishes_without_redoing_work(stack, tmp_path):
    campaign = Campaign(stack, tmp_path, "fault-sigkill", data_seed=102)
    first = campaign.start(n_trials=6, batch=2, log="first.log")
    try:
        wait_for(lambda: len(campaign.rows()) >= 2, 300, "two finished trials")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    before = {row["run_id"]: row for row in campaign.rows()}
    stale = campaign.study().get_trials(states=(TrialState.RUNNING,))
    assert stale, "the kill left no trial in flight; nothing was tested"

    second = campaign.start(n_trials=6, batch=2, log="second.log")
    try:
        output = campaign.finish(second, "second.log")
    finally:
        campaign.cancel_jobs()
    assert second.returncode == 0, output[-3000:]
    rows = campaign.assert_clean_study(6)
    after = {row["run_id"]: row for row in rows}
    for run_id, row in before.items():  # told before the kill: not recomputed
        assert after[run_id]["started_at"] == row["started_at"]
    reaped = [
        t
        for t in campaign.study().trials
        if t.user_attrs.get("fail_reason", "").startswith("stale")
    ]
    assert {t.number for t in reaped} == {t.number for t in stale}
    # Each stale trial that had been planned ran again under its own run id (from cache
    # if its job finished it). One killed between ask and planning has no run ids yet: it
    # is re-enqueued with its parameters, which give it the same run ids when planned.
    submitted = {t.user_attrs["run_ids"][0] for t in stale if "run_ids" in t.user_attrs}
    assert submitted <= set(after)


def restart_postgres(env: dict[str, str], down_sec: float) -> None:
    state = str(Path(env["SLURM_CONF"]).parents[1] / "postgres")
    sh("bash", "deployments/postgres-local.sh", "down", state, env=env)
    time.sleep(down_sec)
    sh("bash", "deployments/postgres-local.sh", "up", state, env=env)


def test_postgres_restart_mid_run_is_ridden_out_and_a_diverged_trial_fails(stack, tmp_path):
    wide = METHODS.replace("high: 3.0e-4", "high: 1.0e-1")
    campaign = Campaign(stack, tmp_path, "fault-pgrestart", data_seed=103, methods=wide)
    campaign.enqueue({"step_size": 0.05})  # diverges within its first chunk
    process = campaign.start(n_trials=8, batch=2, log="tune.log")
    try:
        # Two rows: both workers have compiled (a first run compiles for seconds, long
        # enough to hide the whole outage); six trials of about a second remain.
        wait_for(lambda: len(campaign.rows()) >= 2, 300, "two finished trials")
        # Down long enough that trials finish while it is gone: the driver must retry.
        restart_postgres(stack, down_sec=8)
        output = campaign.finish(process, "tune.log")
    finally:
        process.kill()
        campaign.cancel_jobs()
    assert process.returncode == 0, output[-3000:]
    assert "optuna_storage:" in output and "retrying in" in output, output[-3000:]
    rows = campaign.assert_clean_study(8)
    # The diverged trial: FAIL with its reason, no objective (not inf), and the campaign
    # went on. TPE models COMPLETE trials only, so it is out of the sampler's model.
    diverged = campaign.study().trials[0]
    assert diverged.state == TrialState.FAIL and diverged.values is None
    assert diverged.user_attrs["status"] == "diverged" and diverged.user_attrs["fail_reason"]
    (row,) = [r for r in rows if r["run_id"] == diverged.user_attrs["run_ids"][0]]
    assert row["status"] == "diverged" and row["objective"] is None and row["error"]
    assert sum(r["status"] == "ok" for r in rows) >= 1
    assert PASSWORD not in output


def test_postgres_down_for_good_fails_within_the_bound_with_one_line(stack, tmp_path):
    campaign = Campaign(stack, tmp_path, "fault-pgdown", data_seed=104)
    process = campaign.start(
        n_trials=6, batch=2, log="tune.log", LAMBDA_HAT_BUDGETS__STORAGE_RETRY_SEC="10"
    )
    state = str(Path(stack["SLURM_CONF"]).parents[1] / "postgres")
    try:
        wait_for(lambda: len(campaign.rows()) >= 1, 300, "a finished trial")
        sh("bash", "deployments/postgres-local.sh", "down", state, env=stack)
        stopped = time.monotonic()
        output = campaign.finish(process, "tune.log", timeout=180)
        failed_after = time.monotonic() - stopped
    finally:
        process.kill()
        campaign.cancel_jobs()
        sh("bash", "deployments/postgres-local.sh", "up", state, env=stack)
    assert process.returncode == 1, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: optuna_storage: ") and "failed for 10 s" in last, last
    assert failed_after < 90, failed_after  # bounded: trial time + 10 s of retries + teardown
    assert PASSWORD not in output


def test_eight_concurrent_workers_against_postgres(stack, tmp_path):
    """The load check at CI size (4 SLURM jobs × 2 worker threads); the ≥ 32-worker run is
    benchmarks/load_slurm.py."""
    report = run_load_campaign(stack, tmp_path, "load-ci", jobs=4, threads=2, n_trials=24)
    print(json.dumps({k: v for k, v in report.items() if k != "output_tail"}))
    assert report["returncode"] == 0, report["output_tail"]
    assert report["trials_finished"] == 24 and report["rows"] == 24
    assert report["trials_running"] == 0 and report["trial_errors"] == 0
    assert report["duplicate_params"] == 0 and report["duplicate_run_ids"] == 0
    assert report["distinct_slurm_jobs"] == 4
    assert report["peak_concurrent_trials"] >= 6, report  # the workers really ran together
    # One driver, one small pool per open study (pool_size 2 + overflow 2): bounded.
    assert report["pg_connections_peak"] <= 6, report


RETIRING_PROFILE = """
trials:
  cluster: {{cores: 1, processes: 1, memory: 4GB, walltime: "00:05:00",
            worker_extra_args: ["--lifetime", "15s", "--lifetime-stagger", "2s"],
            job_name: {name}, interface: lo, log_directory: {logs}}}
  scale: {{adapt: {{minimum_jobs: 2, maximum_jobs: 2}}}}
  start_timeout_sec: 120
reference:
  cluster: {{cores: 1, processes: 1, memory: 4GB, walltime: "00:05:00",
            job_name: {name}-ref, interface: lo, log_directory: {logs}}}
  scale: {{jobs: 1}}
  start_timeout_sec: 120
"""


def test_overrunning_trials_stop_at_their_budget_and_retired_jobs_are_replaced(stack, tmp_path):
    # Trials that would run for minutes, a 3 s budget, and jobs that retire after ~15 s
    # (the profiles' --lifetime before walltime; a walltime or pre-emption kill takes the
    # path of the scancel test): the runner ends each trial near its budget, and adapt
    # brings up new jobs so the campaign finishes.
    overrun = METHODS.replace("num_steps: 15000", "num_steps: 10000000, burn_in_frac: 0.0")
    campaign = Campaign(stack, tmp_path, "fault-overrun", data_seed=105, methods=overrun)
    (tmp_path / "profile.yaml").write_text(
        RETIRING_PROFILE.format(name=campaign.name, logs=tmp_path / "logs")
    )
    process = campaign.start(
        n_trials=16, batch=2, log="tune.log", LAMBDA_HAT_BUDGETS__TRIAL_SEC="3"
    )
    try:
        # A hang guard, not a speed claim: each replacement job loads JAX and Prefect
        # before its first 3 s run, and on a machine at half speed that took the campaign
        # past 480 s (6 of 16 trials done), with the workers retiring as designed.
        output = campaign.finish(process, "tune.log", timeout=1500)
    finally:
        process.kill()
        campaign.cancel_jobs()
    assert process.returncode == 0, output[-3000:]
    rows = campaign.assert_clean_study(16)
    assert {row["status"] for row in rows} == {"budget_exhausted"}
    # The runner's own deadline, checked with what it measured (not a wall-clock constant,
    # which a loaded machine breaks: a 1.1 × budget bound failed at 3.45 s): it started no
    # chunk that its slowest chunk so far said would end within FINISH_SEC of the budget,
    # and the budget, not the step count, ended every run after many chunks.
    for row in rows:
        metrics = json.loads((campaign.runs / row["run_id"] / "metrics.json").read_text())
        timing = metrics["diagnostics"]
        assert timing["decision_margin_sec"] >= FINISH_SEC - 1e-6, timing
        assert timing["slowest_chunk_sec"] < 3, timing
    assert all(row["llc_hat"] is not None for row in rows)  # the draws so far are kept
    assert len({row["slurm_job_id"] for row in rows}) >= 3, rows  # a replacement job ran
