"""The production path end to end, driven the way a user drives it: a real single-node SLURM,
a real Postgres, a real Prefect server, `prefect deploy`, `prefect deployment run`, and a
process worker with `--run-once`. Everything is brought up with the scripts users get
(`deployments/*.sh`) and torn down by PID.

Needs root and the packages of `deployments/install-system-packages.sh` (the README's test
command installs them). It fails loudly without them; `LAMBDA_HAT_SKIP_E2E=1` (never set in
CI) skips it on machines where it cannot run.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, temporary_settings

from lambda_hat.results import read_rows

from .conftest import REPO

pytestmark = pytest.mark.skipif(
    os.environ.get("LAMBDA_HAT_SKIP_E2E") == "1", reason="LAMBDA_HAT_SKIP_E2E=1 (opt-out)"
)

PREFECT = str(REPO / ".venv" / "bin" / "prefect")
PROFILE = """
trials:
  cluster: {{cores: 1, processes: 1, memory: 4GB, walltime: "00:20:00",
            job_name: lambda-hat-trial, interface: lo, log_directory: {logs}}}
  scale: {{jobs: 2}}
  start_timeout_sec: 120
reference:
  cluster: {{cores: 2, processes: 1, memory: 4GB, walltime: "00:20:00",
            job_name: lambda-hat-reference, interface: lo, log_directory: {logs}}}
  scale: {{jobs: 1}}
  start_timeout_sec: 120
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sh(*args: str, env: dict[str, str], timeout: float = 300) -> str:
    """Run a command from the repo root; fail with its output if it fails."""
    out = subprocess.run(
        list(args), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert out.returncode == 0, (
        f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout


def exports(output: str) -> dict[str, str]:
    return dict(re.findall(r"^export (\w+)=(\S+)$", output, flags=re.MULTILINE))


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """SLURM, Postgres and Prefect (server + work pool) from the user scripts; down by PID."""
    assert os.geteuid() == 0, "the end-to-end test needs root (SLURM as root, Postgres via runuser)"
    # munged and postgres run as their own users: their state must not sit under pytest's
    # private (0700) temp directories.
    shared = Path(tempfile.mkdtemp(prefix="lambda-hat-e2e-"))
    shared.chmod(0o755)
    env = {
        **os.environ,
        "PGPORT": str(free_port()),
        "PREFECT_PORT": str(free_port()),
        "SLURMCTLD_PORT": str(free_port()),
        "SLURMD_PORT": str(free_port()),
        "DO_NOT_TRACK": "1",
        "PREFECT_HOME": str(shared / "prefect-home"),
    }
    for key in ("PREFECT_API_URL", "LAMBDA_HAT_OPTUNA_STORAGE", "SLURM_CONF"):
        env.pop(key, None)
    state = {name: str(shared / name) for name in ("slurm", "postgres", "prefect")}
    down = [
        ("deployments/stack.sh", "down", state["prefect"]),
        ("deployments/postgres-local.sh", "down", state["postgres"]),
        ("deployments/slurm-local.sh", "down", state["slurm"]),
    ]
    try:
        env.update(exports(sh("bash", "deployments/slurm-local.sh", "up", state["slurm"], env=env)))
        env.update(
            exports(sh("bash", "deployments/postgres-local.sh", "up", state["postgres"], env=env))
        )
        env.update(exports(sh("bash", "deployments/stack.sh", "up", state["prefect"], env=env)))
        yield env
    finally:
        for script, action, directory in down:
            subprocess.run(["bash", script, action, directory], cwd=REPO, env=env, timeout=120)
        shutil.rmtree(shared, ignore_errors=True)


def test_deploy_and_run_tune_on_slurm_and_postgres(stack, tmp_path):
    started = time.monotonic()
    env = stack
    # The user's deploy: the work pool exists (stack.sh made it), deploy everything.
    pool = sh(PREFECT, "work-pool", "inspect", "lambda-hat", env=env)
    assert "name='lambda-hat'" in pool and "type='process'" in pool, pool
    sh(PREFECT, "--no-prompt", "deploy", "--all", env=env)
    nightly = sh(PREFECT, "deployment", "inspect", "reference/reference-nightly", env=env)
    assert "'cron': '0 2 * * *'" in nightly and "'timezone': 'UTC'" in nightly
    assert "'refresh': True" in nightly
    assert "flows.tune:tune" in sh(PREFECT, "deployment", "inspect", "tune/tune", env=env)

    # The worker's environment is where settings (and the storage secret) live.
    (tmp_path / "profile.yaml").write_text(PROFILE.format(logs=tmp_path / "slurm-logs"))
    worker_env = {
        **env,
        "LAMBDA_HAT_CLUSTER__KIND": "slurm",
        "LAMBDA_HAT_CLUSTER__PROFILE": str(tmp_path / "profile.yaml"),
        "LAMBDA_HAT_RESULTS_DIR": str(tmp_path / "results"),
        "LAMBDA_HAT_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        "LAMBDA_HAT_JAX__COMPILATION_CACHE_DIR": str(REPO / ".jax_cache"),
    }
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
        "--param", "reference_warmup=100",
        "--param", "reference_draws=200",
        "--param", f"methods_file={tmp_path / 'methods.yaml'}",
        env=env,
    )  # fmt: skip
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", run).group(1)
    sh(PREFECT, "worker", "start", "--pool", "lambda-hat", "--run-once", env=worker_env,
       timeout=600)  # fmt: skip

    api = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    with temporary_settings(api), get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
        assert flow_run.state.is_completed(), flow_run.state
        wanted = ArtifactFilter(key=ArtifactFilterKey(any_=["leaderboard", "tune-report"]))
        keys = {a.key for a in client.read_artifacts(artifact_filter=wanted)}
        assert keys == {"leaderboard", "tune-report"}

    rows = read_rows(tmp_path / "results" / "runs.parquet")
    assert len(rows) == 2 * 2 * 3
    jobs = {row["slurm_job_id"] for row in rows}
    assert None not in jobs and "" not in jobs and len(jobs) >= 2, jobs
    assert {row["slurm_job_name"] for row in rows} == {"lambda-hat-trial"}
    storage = env["LAMBDA_HAT_OPTUNA_STORAGE"]
    assert storage.startswith("postgresql+psycopg://")
    for row in rows:
        study = optuna.load_study(study_name=row["study_name"], storage=storage)
        assert row["trial_number"] in {t.number for t in study.trials}
    for pid in {row["pid"] for row in rows}:
        ref = json.loads((tmp_path / "artifacts" / "problems" / pid / "ref.json").read_text())
        assert ref["slurm_job_id"] and ref["slurm_job_name"] == "lambda-hat-reference"
        assert ref["slurm_job_id"] not in jobs
    # The password is a secret: not in parameters, artifacts or the Parquet file.
    password = storage.split(":")[2].split("@")[0]
    assert password not in json.dumps(rows, default=str)
    assert password not in json.dumps(flow_run.parameters)
    print(f"end-to-end test body took {time.monotonic() - started:.0f} s")


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
