"""The local Prefect server of a terminal run, started so that it cannot outlive the run.

    python flows/server_guard.py <run's pid> <port>

``flows.terminal.prefect_api`` starts this instead of ``prefect server start`` itself. It
asks Linux to send it SIGTERM when the run that started it dies, however it dies
(``PR_SET_PDEATHSIG``: SIGKILL included, which no handler in the run can see), then runs
the server in its own process group and stops that whole group on SIGTERM. Without it, a
SIGKILLed run left its server running with no parent (263 MB measured).
It imports nothing of lambda_hat's, so that it starts in a fraction of a second.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SEC = 15.0


def main(argv: list[str]) -> int:
    run_pid, port = int(argv[0]), argv[1]
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != run_pid:  # the run died before the line above took effect
        return 0
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start",
         "--host", "127.0.0.1", "--port", port],
    )  # fmt: skip

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)  # the server and whatever it started (this group)
        try:
            server.wait(timeout=STOP_SEC)
        except subprocess.TimeoutExpired:
            os.killpg(0, signal.SIGKILL)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    return server.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
