"""The real production stack for the end-to-end and fault tests: a single-node SLURM, a
Postgres and a Prefect server (with the `lambda-hat` work pool), each brought up with the
scripts users get (`deployments/*.sh`) and torn down by PID. One stack per test run (the
session fixture ``stack`` in conftest.py).

Needs root and the packages of `deployments/install-system-packages.sh` (the README's test
command installs them). It fails loudly without them; `LAMBDA_HAT_SKIP_E2E=1` (never set in
CI) skips those tests on machines where they cannot run.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# A recognisable password: the security checks scan every output for it.
PASSWORD = "Zq7-lambda-hat-SECRET-4711"
skip_without_stack = pytest.mark.skipif(
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


def slurm_settings_env(stack: dict[str, str], tmp: Path) -> dict[str, str]:
    """The stack's environment plus the lambda_hat settings of a SLURM campaign whose
    profile, results and artifacts live in ``tmp``."""
    return {
        **stack,
        "LAMBDA_HAT_CLUSTER__KIND": "slurm",
        "LAMBDA_HAT_CLUSTER__PROFILE": str(tmp / "profile.yaml"),
        "LAMBDA_HAT_RESULTS_DIR": str(tmp / "results"),
        "LAMBDA_HAT_ARTIFACTS_DIR": str(tmp / "artifacts"),
        "LAMBDA_HAT_JAX__COMPILATION_CACHE_DIR": str(REPO / ".jax_cache"),
    }


def write_one_problem(tmp: Path, name: str, data_seed: int) -> str:
    """``tmp/problems.yaml`` with the first smoke problem renamed and reseeded (so each
    campaign has its own pid, hence its own study); returns the pid."""
    from lambda_hat.problems.specs import load_problem_set

    spec = load_problem_set("smoke").problems[0].model_dump(mode="json")
    spec.update(name=name, seed=data_seed)
    (tmp / "problems.yaml").write_text(json.dumps({"problems": [spec]}))
    return load_problem_set(str(tmp / "problems.yaml")).problems[0].pid


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


def real_stack(cpus: int = 16, memory_mb: int | None = None) -> Iterator[dict[str, str]]:
    """SLURM, Postgres and Prefect (server + work pool) from the user scripts; down by PID.
    Yields the environment that reaches them (SLURM_CONF, the storage URL, the API URL)."""
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
        "LAMBDA_HAT_PG_PASSWORD": PASSWORD,
        "CPUS": str(cpus),  # declared; more than the machine has (config_overrides)
        **({"MEMORY_MB": str(memory_mb)} if memory_mb else {}),
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
