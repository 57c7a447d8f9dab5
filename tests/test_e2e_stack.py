"""The production path end to end, driven the way a user drives it: a real single-node SLURM,
a real Postgres, a real Prefect server, `prefect deploy`, `prefect deployment run`, and a
process worker with `--run-once` (the stack: tests/stack.py)."""

import json
import re
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, temporary_settings

from lambda_hat.results.tables import read_rows

from .stack import PASSWORD, PREFECT, PROFILE, REPO, sh, skip_without_stack, slurm_settings_env

pytestmark = skip_without_stack


def test_deploy_and_run_tune_on_slurm_and_postgres(stack, tmp_path):
    started = time.monotonic()
    env = stack
    # The user's deploy: the work pool exists (stack.sh made it), deploy everything.
    pool = sh(PREFECT, "work-pool", "inspect", "lambda-hat", env=env)
    assert "name='lambda-hat'" in pool and "type='process'" in pool, pool
    sh(PREFECT, "--no-prompt", "deploy", "--all", env=env)
    nightly = sh(PREFECT, "deployment", "inspect", "reference/reference-nightly", env=env)
    assert "'cron': '0 2 * * *'" in nightly and "'timezone': 'UTC'" in nightly
    assert "'refresh': False" in nightly  # computes what is missing or stale
    assert "flows.tune:tune" in sh(PREFECT, "deployment", "inspect", "tune/tune", env=env)

    # The worker's environment is where settings (and the storage secret) live.
    (tmp_path / "profile.yaml").write_text(PROFILE.format(logs=tmp_path / "slurm-logs"))
    worker_env = slurm_settings_env(env, tmp_path)
    (tmp_path / "methods.yaml").write_text(
        "methods:\n"
        "  sgld:\n    fixed: {num_steps: 1000, thinning: 5, batch_size: 64}\n"
        "    space: {step_size: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}}\n"
        "  vi:\n    fixed: {num_steps: 500, family: meanfield, num_eval_samples: 64}\n"
        "    space: {learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}}\n"
    )
    run = sh(
        PREFECT, "deployment", "run", "tune/tune",
        "--param", "problems=smoke",
        "--param", 'methods=["sgld", "vi"]',
        "--param", "n_trials=3",
        "--param", "batch=2",
        "--param", "repeats=2",
        "--param", "validate_top_k=1",
        "--param", "validation_seeds=2",
        "--param", "reference_warmup=100",
        "--param", "reference_draws=200",
        "--param", f"methods_file={tmp_path / 'methods.yaml'}",
        env=env,
    )  # fmt: skip
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run).group(1)
    worker = subprocess.run(
        [PREFECT, "worker", "start", "--pool", "lambda-hat", "--run-once"],
        cwd=REPO, env=worker_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr[-3000:]

    api = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    with temporary_settings(api), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        assert flow_run.state.is_completed(), flow_run.state
        wanted = ArtifactFilter(key=ArtifactFilterKey(any_=["leaderboard", "tune-report"]))
        keys = {a.key for a in client.read_artifacts(artifact_filter=wanted)}
        assert keys == {"leaderboard", "tune-report"}

    rows = read_rows(tmp_path / "results" / "runs.parquet")
    assert len([row for row in rows if row["stage"] == "search"]) == 2 * 2 * 3 * 2
    assert 0 < len([row for row in rows if row["stage"] == "validation"]) <= 2 * 2 * 2
    assert len(read_rows(tmp_path / "results" / "leaderboard.parquet")) == 2 * 2
    jobs = {row["slurm_job_id"] for row in rows}
    assert None not in jobs and "" not in jobs and len(jobs) >= 2, jobs
    assert {row["slurm_job_name"] for row in rows} == {"lambda-hat-trial"}
    storage = env["LAMBDA_HAT_OPTUNA_STORAGE"]
    assert storage.startswith("postgresql+psycopg://")
    for row in rows:
        study = optuna.load_study(study_name=row["study_name"], storage=storage)
        assert row["trial_number"] in {t.number for t in study.trials}
        assert row["config_id"] in {t.user_attrs.get("config_id") for t in study.trials}
    for pid in {row["pid"] for row in rows}:
        ref = json.loads((tmp_path / "artifacts" / "problems" / pid / "ref.json").read_text())
        assert ref["slurm_job_id"] and ref["slurm_job_name"] == "lambda-hat-reference"
        assert ref["slurm_job_id"] not in jobs
    assert PASSWORD in storage  # the run really used the recognisable password
    assert_secret_nowhere(
        PASSWORD,
        env["PREFECT_API_URL"],
        texts={"worker output": worker.stdout + worker.stderr},
        directories=[tmp_path, Path(env["PREFECT_HOME"])],
    )
    print(f"end-to-end test body took {time.monotonic() - started:.0f} s")


def assert_secret_nowhere(secret, api_url, texts, directories):
    """The secret is in no output: the given texts, every file (results, artifacts, Parquet,
    metrics.json, Prefect cache entries, SLURM job logs, the Prefect server's database), and
    every flow run's parameters, log line and artifact on the server."""
    found = [name for name, text in texts.items() if secret in text]
    for directory in directories:
        for path in Path(directory).rglob("*"):
            if path.is_file() and secret.encode() in path.read_bytes():
                found.append(str(path))
    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs()
        artifacts = client.read_artifacts()
    assert len(runs) >= 4 and logs and artifacts  # the run's flows, subflows, logs, tables
    for kind, items in (("flow run", runs), ("log", logs), ("artifact", artifacts)):
        for item in items:
            if secret in item.model_dump_json():
                found.append(f"{kind} {item.model_dump_json()[:200]}")
    assert not found, found


def test_jobs_that_never_start_fail_fast_with_a_clear_message(stack, tmp_path, monkeypatch):
    # A partition that does not exist: sbatch refuses every job, no worker ever joins.
    from flows.cluster import ClusterError, dask_cluster
    from lambda_hat.settings import ClusterSettings

    profile = tmp_path / "bad.yaml"
    profile.write_text(
        PROFILE.format(logs=tmp_path / "logs")
        .replace("job_name: lambda-hat-trial", "job_name: lambda-hat-trial, queue: nosuchpartition")
        .replace("start_timeout_sec: 120", "start_timeout_sec: 15")
    )
    monkeypatch.setenv("SLURM_CONF", stack["SLURM_CONF"])
    settings = ClusterSettings(kind="slurm", profile=str(profile))
    started = time.monotonic()
    with pytest.raises(ClusterError) as error, dask_cluster(settings, role="trials"):
        pass
    waited = time.monotonic() - started
    assert "no slurm worker joined within start_timeout_sec=15 s" in str(error.value)
    assert "queue='nosuchpartition'" in str(error.value)
    assert waited < 60, waited
