"""What a person at the terminal gets from ``python flows/tune.py``.

- **One Prefect server for the run**: with ``PREFECT_API_URL`` unset, the run starts a local
  server itself (and stops it at the end; ``flows/server_guard.py`` stops it if the run is
  SIGKILLed) and hands its URL to every Dask worker; Prefect's own fallback would start a
  temporary server in the flow and in every worker process.
- **A quiet console**: the flow's own lines (one per finished trial, the leaderboard, where
  the report is) and warnings; Dask's chatter (the workers' included) and Prefect's
  per-task state lines go to ``<results_dir>/logs/tune-<time>.log`` (the Prefect UI has
  the task states).
- **Interruptions end in one line**: SIGINT (Ctrl-C) and SIGTERM are blocked in every
  thread and child process and received by one watcher thread, so the Dask worker
  processes never see a Ctrl-C meant for the run. The watcher prints one line, sends the
  rest of the run's output to the log file, and interrupts the main thread; the flow then
  stops the cluster and the server on its way out. RUNNING trials stay in the study for the
  next run to reap. A second signal ends the process at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
# The watcher thread wakes the main thread with this signal; its handler raises
# KeyboardInterrupt there (the only thread where Python delivers signals).
WAKE = signal.SIGUSR1
SERVER_START_SEC = 180.0
_server: subprocess.Popen | None = None
_received: int = signal.SIGINT
_interrupted = threading.Event()
_log: TextIO | None = None  # the run's log file, once the console is quiet


def received_signal() -> int:
    """The signal that interrupted the run (SIGINT when none did)."""
    return _received


def interrupted() -> bool:
    """Whether a SIGINT or SIGTERM has stopped the run."""
    return _interrupted.is_set()


class ServerError(RuntimeError):
    """The local Prefect server did not start."""


@contextlib.contextmanager
def _signals_unblocked() -> Iterator[None]:
    """Children inherit the mask of the thread that starts them: the server must stop on
    SIGTERM. (A preexec_fn would force a fork(), which JAX warns against.)"""
    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _drain_prefect_clients() -> None:
    """Send the logs and events still queued before the server stops (else Prefect prints
    "Error logging to API" at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            service.drain_all(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


def _stop_server(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL the run uses: ``PREFECT_API_URL`` (environment or the
    Prefect profile) if set, else a local server started here and stopped on the way out."""
    global _server
    from filelock import FileLock, Timeout
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    configured = PREFECT_API_URL.value()
    if configured:
        os.environ.setdefault("PREFECT_API_URL", configured)
        yield configured
        return
    # Two runs at once on a fresh PREFECT_HOME would both create and migrate its database
    # (one of them failed about every other time): one server starts at a time.
    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    starting = FileLock(str(home / ".lambda-hat-server-start.lock"))
    try:
        starting.acquire(timeout=SERVER_START_SEC)
    except Timeout:
        raise ServerError(f"another run held {starting.lock_file} too long") from None
    try:
        url, log_path = _start_server()
        deadline = time.monotonic() + SERVER_START_SEC
        while not _healthy(url):
            if _server.poll() is not None or time.monotonic() > deadline:
                raise ServerError(f"the local Prefect server did not start; see {log_path}")
            time.sleep(0.5)
        starting.release()
        os.environ["PREFECT_API_URL"] = url  # for the Dask workers
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        starting.release(force=True)
        _drain_prefect_clients()
        if _server is not None:
            _stop_server(_server)
        os.environ.pop("PREFECT_API_URL", None)
        _server = None


def _start_server() -> tuple[str, Path]:
    """Start the local server (through flows/server_guard.py, so that it ends with this
    process even SIGKILLed); its URL and log."""
    global _server
    port = _free_port()
    log_path = Path(tempfile.gettempdir()) / f"lambda-hat-prefect-server-{port}.log"
    print(f"starting a local Prefect server at http://127.0.0.1:{port} (log: {log_path})",
          file=sys.stderr, flush=True)  # fmt: skip
    with open(log_path, "w") as log_file, _signals_unblocked():
        _server = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("server_guard.py")),
             str(os.getpid()), str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
        )  # fmt: skip
    return f"http://127.0.0.1:{port}/api", log_path


class _RoutineLines(logging.Filter):
    """Drop routine INFO lines from the console: Prefect's per-task states ("Finished in
    state Completed()", thousands in a campaign; the Prefect UI shows them) and the Dask
    task runner's connection notes (which name a dashboard that is switched off)."""

    ROUTINE = ("prefect.task_runs", "prefect.task_runner")

    def __init__(self, one_line_errors: tuple[type[BaseException], ...]):
        super().__init__()
        self.one_line_errors = one_line_errors

    def filter(self, record: logging.LogRecord) -> bool:
        # The traceback of an error the run reports in one line (a lost database, a full
        # disk) stays in the log and the Prefect UI; the terminal gets the line.
        if record.exc_info and isinstance(record.exc_info[1], self.one_line_errors):
            return False
        return record.levelno >= logging.WARNING or not record.name.startswith(self.ROUTINE)


def _console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    return [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]


def _point_console_at(stream: TextIO) -> None:
    for handler in _console_handlers():
        handler.setStream(stream)
        handler.console.file = stream  # (rich's console writes, not the StreamHandler)


def quiet_console(log_path: Path, one_line_errors: tuple[type[BaseException], ...] = ()) -> None:
    """From here on the process's file descriptors 1 and 2, which every child process
    (Dask workers, sbatch) inherits, write to ``log_path``; the flow's own lines still go
    to the terminal (through duplicates of the original descriptors)."""
    global _log
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the run
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    terminal_out = os.fdopen(os.dup(1), "w", buffering=1)
    terminal_err = os.fdopen(os.dup(2), "w", buffering=1)
    os.dup2(_log.fileno(), 1)
    os.dup2(_log.fileno(), 2)
    sys.stdout, sys.stderr = terminal_out, terminal_err
    _point_console_at(terminal_err)
    for handler in _console_handlers():
        handler.addFilter(_RoutineLines(one_line_errors))
    # Dask's loggers in this process (scheduler, nannies) propagate to Prefect's console
    # handler; theirs go to the log alone, with the workers' output.
    dask_logger = logging.getLogger("distributed")
    for old in list(dask_logger.handlers):
        dask_logger.removeHandler(old)
    handler = logging.StreamHandler(_log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    dask_logger.addHandler(handler)
    dask_logger.propagate = False
    # Python warnings too ("Port 8787 is already in use" from a second Dask dashboard: 4
    # lines on the terminal): the log has them; the terminal keeps the flow's lines.
    # A log on a full disk cannot take a line: drop it, rather than print a 20-line
    # "--- Logging error ---" on the terminal after the run's one line.
    logging.raiseExceptions = False
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    warnings_logger.handlers = [handler]
    warnings_logger.propagate = False
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created ..."


def _silence(log_path: Path) -> None:
    """After the one line: everything else the run prints goes to the log."""
    global _log
    if _log is None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        _log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the run
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os.dup2(_log.fileno(), 1)
        os.dup2(_log.fileno(), 2)
    sys.stdout = sys.stderr = _log
    _point_console_at(_log)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch(log_path: Path, main_thread: int) -> None:
    global _received
    received = _received = signal.sigwait(INTERRUPTS)
    _interrupted.set()
    name = signal.Signals(received).name
    print(
        f"interrupted ({name}): stopping the cluster; RUNNING trials resume when the same "
        f"command runs again (details: {log_path})",
        file=sys.stderr,
        flush=True,
    )
    _silence(log_path)
    signal.pthread_kill(main_thread, WAKE)
    signal.sigwait(INTERRUPTS)  # a second one: stop now
    if _server is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(_server.pid, signal.SIGKILL)
    os._exit(128 + received)


def exit_process(code: int) -> None:
    """End the process with ``code``. After an interrupt the run's own cleanup is done (the
    cluster and the server are stopped) but daemon threads of the studies and of Dask may
    still be writing to the log: a normal interpreter shutdown then aborts ("could not
    acquire lock ... at interpreter shutdown", exit -6), so the streams are flushed and the
    process ends without finalisation."""
    if not interrupted():
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr, _log):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    os._exit(code)


def watch_interrupts(log_path: Path) -> None:
    """Call first thing in ``main``, before any thread or child process exists."""
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    signal.signal(WAKE, _raise_interrupt)
    threading.Thread(
        target=_watch, args=(log_path, threading.get_ident()), name="interrupts", daemon=True
    ).start()
