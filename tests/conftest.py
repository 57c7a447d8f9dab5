"""Shared fixtures. The JAX compilation cache is on for the whole run (tests reuse kernels)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.problems.specs import ProblemSpec

enable_compilation_cache()


def sgld_methods(
    num_steps: int, low: float, high: float, *, num_chains: int = 2, thinning: int = 5
) -> str:
    """A methods file (YAML) with SGLD alone: fixed length and minibatch 64, the step size
    searched log-uniformly on [low, high]. The flow tests size their runs with it."""
    return f"""
methods:
  sgld:
    fixed: {{num_steps: {num_steps}, thinning: {thinning}, num_chains: {num_chains},
             batch_size: 64}}
    space:
      step_size: {{type: float, low: {low:.1e}, high: {high:.1e}, log: true}}
"""


def make_spec(**overrides) -> ProblemSpec:
    """A tiny RRR problem (M=3, H=2, N=3, r=1, n=500) with fields overridden."""
    base = {
        "name": "tiny_rrr",
        "model": {"family": "rrr", "m_in": 3, "hidden": 2, "n_out": 3},
        "teacher": {"rank": 1},
        "data": {"n": 500},
    }
    base.update(overrides)
    return ProblemSpec.model_validate(base)


@pytest.fixture
def tiny_spec() -> ProblemSpec:
    return make_spec()


REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """One real Prefect server (``prefect server start``) for the whole test run.

    Fails loudly if it does not come up. Flows in the tests, their subflows and the Dask
    worker processes they spawn all talk to it (the URL is in the settings context and in
    the environment the workers inherit).
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed at teardown
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            tail = (home / "server.log").read_text()[-2000:]
            pytest.fail(f"the Prefect server did not start:\n{tail}")
        time.sleep(0.5)
    storage = home / "local-storage"
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_LOCAL_STORAGE_PATH")}
    os.environ["PREFECT_API_URL"] = url  # for spawned Dask workers and CLI subprocesses
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(storage)
    try:
        with temporary_settings({PREFECT_API_URL: url, PREFECT_LOCAL_STORAGE_PATH: storage}):
            yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture
def lambda_hat_env(tmp_path, monkeypatch):
    """Results and artifacts in a fresh directory; the JAX compile cache shared by the run."""
    monkeypatch.setenv("LAMBDA_HAT_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("LAMBDA_HAT_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("LAMBDA_HAT_JAX__COMPILATION_CACHE_DIR", str(REPO / ".jax_cache"))
    monkeypatch.delenv("LAMBDA_HAT_OPTUNA_STORAGE", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def stack():
    """The real SLURM + Postgres + Prefect stack (tests/stack.py), once per test run."""
    from .stack import real_stack

    yield from real_stack()
