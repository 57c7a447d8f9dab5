"""A study's progress artifact and best value, refreshed on a timer, off the run path.

Updating the Prefect artifact is an API call and the best value a storage query: done after
every trial, both sat between a run's end and the next run's start. ``StudyProgress`` keeps
the numbers the driver hands it and a daemon thread sends them every ``every_sec`` (and once
more at ``close``), so the driver only records two numbers per trial.
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
        read_best: Callable[[], float | None],
        every_sec: float = 2.0,
    ):
        self._artifact_id = artifact_id
        self._read_best = read_best
        self._every_sec = every_sec
        self._lock = threading.Lock()
        self._percent: float | None = None
        self._sent: float | None = None
        self._best: float | None = None
        self._stop = threading.Event()
        # The copied context carries the flow run and the Prefect API settings.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._loop,), daemon=True,
            name="study-progress",
        )  # fmt: skip
        self._thread.start()

    def trial_done(self, percent: float, objective: float | None) -> float | None:
        """Note a finished trial; the best value known (the last one read from the storage,
        which other drivers of the study also write to, or this trial's if lower)."""
        with self._lock:
            self._percent = percent
            if objective is not None and (self._best is None or objective < self._best):
                self._best = objective
            return self._best

    def close(self, send: bool = True) -> None:
        """Stop the timer; ``send`` the last numbers (not when the study is failing: a
        storage error here would hide the one that ended it)."""
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
        best = self._read_best()
        with self._lock:
            if best is not None and (self._best is None or best < self._best):
                self._best = best
