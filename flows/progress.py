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
    ):
        self._artifact_id = artifact_id
        self._every_sec = every_sec
        self._lock = threading.Lock()
        self._percent: float | None = None
        self._sent: float | None = None
        self._best: float | None = read_best()
        self._stop = threading.Event()
        # The copied context carries the flow run and the Prefect API settings.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._loop,), daemon=True,
            name="study-progress",
        )  # fmt: skip
        self._thread.start()

    def trial_done(self, percent: float, objective: float | None) -> float | None:
        """Note a finished trial; the best value known (the study's when this run started,
        or a lower one this run told since)."""
        with self._lock:
            self._percent = percent
            if objective is not None and (self._best is None or objective < self._best):
                self._best = objective
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
            percent = self._percent
        if percent is not None and percent != self._sent:
            update_progress_artifact(self._artifact_id, percent)
            self._sent = percent
