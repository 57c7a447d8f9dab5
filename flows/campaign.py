"""Running a campaign's studies at once: each study's subflow in its own thread, all of
them sharing the cluster's trial slots (``lambda_hat.tuning.slots``).

The slots reach each study through a context variable, read by ``current_slots()``: a
module-level function, so a flow that calls it can still be serialised (Prefect ships the
flow to the Dask workers with each task, and a ContextVar cannot be).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from lambda_hat.tuning.slots import TrialSlots

# The campaign's trial slots, seen by every study's subflow (each runs in a thread that
# copied this context); None when a tune-method subflow runs on its own.
_SLOTS: ContextVar[TrialSlots | None] = ContextVar("campaign_slots", default=None)


def current_slots() -> TrialSlots | None:
    return _SLOTS.get()


def all_at_once(calls: list[Callable[[], Any]], slots: TrialSlots | None = None) -> list[Any]:
    """Run each call in its own thread, with a copy of this context (Prefect's flow run
    context included, so each subflow is a child of this run in the UI; ``slots`` as
    ``current_slots()``), and wait for all. The first error is raised once every call has
    ended. The threads are daemons: an interrupted flow does not wait for them."""
    token = _SLOTS.set(slots)
    try:
        return _run_threads(calls)
    finally:
        _SLOTS.reset(token)


def _run_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException | None] = [None] * len(calls)

    def work(index: int, call: Callable[[], Any]) -> None:
        try:
            results[index] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            errors[index] = error

    threads = [
        threading.Thread(
            target=contextvars.copy_context().run, args=(work, index, call),
            name=f"study-{index}", daemon=True,
        )
        for index, call in enumerate(calls)
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for error in errors:
        if error is not None:
            raise error
    return results
