"""``python flows/tune.py`` as a person runs it, with no ``PREFECT_API_URL``: it starts one
Prefect server for the run and none is left behind; the terminal shows the flow's own
lines; Ctrl-C (SIGINT to the whole process group, as a terminal sends it) ends the run
with one line, and running the same command again finishes the study."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psutil
from optuna.trial import TrialState

from lambda_hat.problems.specs import load_problem_set
from lambda_hat.tuning.storage import finished_trials

from .conftest import REPO, sgld_methods

METHODS = sgld_methods(8000, 1.0e-6, 1.0e-4)


class ProcessWatch(threading.Thread):
    """Every process below ``root`` seen while it runs, and which of them were Prefect
    servers (``prefect server start``, or the uvicorn of Prefect's temporary server)."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.seen, self.servers = root, {}, set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                children = psutil.Process(self.root).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                try:
                    command = " ".join(child.cmdline())
                    self.seen.setdefault(child.pid, (child.create_time(), command))
                except psutil.Error:
                    continue
                if "server start" in command or "uvicorn" in command:
                    self.servers.add(child.pid)
            time.sleep(0.2)

    def alive(self) -> list[str]:
        """Those still running (same pid and start time: not a reused pid), given a few
        seconds to exit after the run (the resource tracker leaves when it sees EOF)."""
        deadline = time.monotonic() + 30
        while True:
            left = []
            for pid, (created, command) in self.seen.items():
                try:
                    process = psutil.Process(pid)
                    if process.create_time() == created and process.status() != "zombie":
                        left.append(command)
                except psutil.NoSuchProcess:
                    continue
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LAMBDA_HAT_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        LAMBDA_HAT_RESULTS_DIR=str(tmp_path / "results"),
        LAMBDA_HAT_ARTIFACTS_DIR=str(tmp_path / "artifacts"),
        LAMBDA_HAT_JAX__COMPILATION_CACHE_DIR=str(REPO / ".jax_cache"),
    )
    return env


def _start(tmp_path: Path, output: str) -> tuple[subprocess.Popen, ProcessWatch]:
    spec = load_problem_set("smoke").problems[0]
    (tmp_path / "problems.yaml").write_text(
        json.dumps({"problems": [spec.model_dump(mode="json")]})
    )
    (tmp_path / "methods.yaml").write_text(METHODS)
    argv = [
        sys.executable, str(REPO / "flows" / "tune.py"),
        "--problems", str(tmp_path / "problems.yaml"), "--methods", "sgld",
        "--methods-file", str(tmp_path / "methods.yaml"), "--n-trials", "4", "--batch", "2",
        "--repeats", "1", "--validate-top-k", "1", "--validation-seeds", "2",
        "--reference-warmup", "100", "--reference-draws", "200",
    ]  # fmt: skip
    with open(tmp_path / output, "w") as out:
        process = subprocess.Popen(
            argv, cwd=tmp_path, env=_env(tmp_path), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the test plays the terminal
        )  # fmt: skip
    watch = ProcessWatch(process.pid)
    watch.start()
    return process, watch


def _wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert process.poll() is None, path.read_text()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s"
        time.sleep(0.5)


def _finish(process: subprocess.Popen, watch: ProcessWatch, timeout: float) -> int:
    try:
        return process.wait(timeout=timeout)
    finally:
        watch.stop.set()
        watch.join(5)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_ctrl_c_prints_one_line_then_the_same_command_finishes_with_one_server(tmp_path):
    first, watch = _start(tmp_path, "first.txt")
    _wait_for_line(tmp_path / "first.txt", "(1 of 4 finished)", first, timeout=600)
    os.killpg(first.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    code = _finish(first, watch, timeout=300)
    lines = (tmp_path / "first.txt").read_text().strip().splitlines()
    assert code == 130, lines[-20:]
    interrupted = [i for i, line in enumerate(lines) if line.startswith("interrupted (SIGINT)")]
    assert interrupted == [len(lines) - 1], lines[-20:]  # one line, and nothing after it
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in lines)
    log = Path(lines[-1].split("details: ")[1].rstrip(")"))
    assert "Crash detected" in log.read_text() or "interrupt" in log.read_text()
    assert len(watch.servers) == 1, watch.servers
    assert watch.alive() == []  # the server, the Dask workers: all stopped

    second, watch = _start(tmp_path, "second.txt")
    code = _finish(second, watch, timeout=900)
    text = (tmp_path / "second.txt").read_text()
    assert code == 0, text[-3000:]
    assert len(watch.servers) == 1, watch.servers  # one for the run, none per worker
    assert watch.alive() == []
    # The terminal: the flow's own lines, not Dask's or every task's state.
    assert "(4 of 4 finished)" in text and "validated error" in text
    for noise in ("distributed.", "Task run", "Error logging to API", "Traceback"):
        assert noise not in text, noise
    last = text.strip().splitlines()[-1]
    assert last.startswith("report: ") and Path(last.split()[1]).exists(), last
    # The interrupted trials were reaped and the study ended with exactly 4.
    spec = load_problem_set("smoke").problems[0]
    storage = f"sqlite:///{tmp_path / 'results' / 'optuna.db'}"
    study = optuna.load_study(study_name=f"{spec.pid}:sgld", storage=storage)
    assert finished_trials(study) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))


def test_sigterm_stops_the_run_in_one_line_and_leaves_no_process(tmp_path):
    process, watch = _start(tmp_path, "run.txt")
    _wait_for_line(tmp_path / "run.txt", "Beginning flow run", process, timeout=300)
    process.send_signal(signal.SIGTERM)  # to the run alone, as a scheduler or kill(1) does
    code = _finish(process, watch, timeout=300)
    lines = (tmp_path / "run.txt").read_text().strip().splitlines()
    assert code == 128 + signal.SIGTERM, lines[-20:]
    assert lines[-1].startswith("interrupted (SIGTERM)"), lines[-20:]
    assert sum("interrupted" in line for line in lines) == 1
    assert watch.alive() == []


def test_a_sigkilled_run_leaves_no_prefect_server(tmp_path):
    process, watch = _start(tmp_path, "run.txt")
    _wait_for_line(tmp_path / "run.txt", "Beginning flow run", process, timeout=300)
    servers = set(watch.servers)
    assert servers, "no Prefect server seen"
    process.kill()  # SIGKILL to the run alone: no handler of the run's can act on it
    process.wait()
    watch.stop.set()
    watch.join(5)
    try:
        for pid in servers:
            try:
                psutil.Process(pid).wait(timeout=60)  # a bound on a wait, not a speed claim
            except psutil.NoSuchProcess:
                continue
            except psutil.TimeoutExpired:
                raise AssertionError(f"Prefect server {pid} outlived its SIGKILLed run") from None
    finally:
        for pid in watch.seen:  # the Dask workers the kill orphaned: not this test's subject
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


SERVE_ONCE = """
from flows.terminal import prefect_api
with prefect_api() as url:
    print("served", url)
"""


def test_runs_started_at_once_on_a_fresh_prefect_home_all_get_a_server(tmp_path):
    # All would create and migrate the same new database: with four at once, a third of
    # them failed ("the local Prefect server did not start").
    for attempt in range(2):
        env = {**_env(tmp_path), "PREFECT_HOME": str(tmp_path / f"home-{attempt}")}
        runs = [
            subprocess.Popen(
                [sys.executable, "-c", SERVE_ONCE],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
            for _ in range(4)
        ]
        outputs = [run.communicate(timeout=600)[0] for run in runs]
        assert [run.returncode for run in runs] == [0] * 4, outputs
        assert all("served http://127.0.0.1:" in output for output in outputs), outputs


PORT_TAKEN = """
import socket, sys
from pathlib import Path
from distributed import LocalCluster
from flows.terminal import quiet_console

taken = socket.socket()
taken.bind(("127.0.0.1", 0))
taken.listen()
quiet_console(Path(sys.argv[1]))
with LocalCluster(n_workers=0, dashboard_address=f":{taken.getsockname()[1]}"):
    print("cluster up", file=sys.stderr)
"""


def test_a_dashboard_port_in_use_warns_in_the_log_not_on_the_terminal(tmp_path):
    log = tmp_path / "run.log"
    done = subprocess.run(
        [sys.executable, "-c", PORT_TAKEN, str(log)], cwd=REPO, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "cluster up", done.stderr
    assert "is already in use" in log.read_text()
