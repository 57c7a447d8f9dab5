"""A study's progress artifact and best value, off the run path.

Updating the Prefect artifact is an API call and the best value a storage query: done after
every trial, both sat between a run's end and the next run's start. ``StudyProgress`` reads
the best value once, when the study starts, then keeps the minimum of the objectives this
run tells; a daemon thread sends the progress every ``every_sec`` (and once more at
``close``). No storage connection is held beyond the driver's own.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

from prefect.artifacts import update_progress_artifact

log = logging.getLogger(__name__)


class StudyProgress:
    def __init__(
        self,
        artifact_id: Any,
        read_best: Callable[[], float | None],  # called once, here
        every_sec: float = 2.0,
        what: str = "",
    ):
        self._artifact_id = artifact_id
        self._every_sec = every_sec
        self._what = what  # (the study, in the description after "k of N trials")
        self._lock = threading.Lock()
        self._percent: float | None = None
        self._description: str | None = None
        self._sent: tuple[float, str | None] | None = None
        self._best: float | None = read_best()
        self._stop = threading.Event()
        # The copied context carries the flow run and the Prefect API settings.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._loop,), daemon=True,
            name="study-progress",
        )  # fmt: skip
        self._thread.start()

    def trial_done(self, done: int, total: int, objective: float | None) -> float | None:
        """Note a finished trial (``done`` of ``total``); the best value known (the study's
        when this run started, or a lower one this run told since)."""
        with self._lock:
            self._percent = 100.0 * min(done, total) / total
            if objective is not None and (self._best is None or objective < self._best):
                self._best = objective
            self._description = describe(done, total, self._best, self._what)
            return self._best

    def close(self, send: bool = True) -> None:
        """Stop the timer; ``send`` the last progress (not when the study is failing: an
        API error here would hide the one that ended it)."""
        self._stop.set()
        self._thread.join()
        if send:
            self._send()

    def _loop(self) -> None:
        while not self._stop.wait(self._every_sec):
            try:
                self._send()
            except Exception as error:  # noqa: BLE001 - progress only; the next tick retries
                log.debug("progress not sent: %s", error)

    def _send(self) -> None:
        with self._lock:
            state = (self._percent, self._description)
        if state[0] is not None and state != self._sent:
            update_progress_artifact(self._artifact_id, state[0], description=state[1])
            self._sent = state


def describe(done: int, total: int, best: float | None, what: str = "") -> str:
    """The progress artifact's description.

    >>> describe(3, 8, 0.123456, "study p_1:sgld")
    '3 of 8 trials, best so far 0.1235 (study p_1:sgld)'
    """
    shown = "none yet" if best is None else f"{best:.4g}"
    return f"{done} of {total} trials, best so far {shown}" + (f" ({what})" if what else "")
