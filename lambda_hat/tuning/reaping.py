"""Who owns a RUNNING trial, and which ones a dead driver left behind.

Several drivers may work on one study at once (the ``tune`` deployment triggered twice, a
command-line run beside a UI run, two login nodes). Each RUNNING trial belongs to the
driver that asked it: its ``owner`` user attr holds the driver (``host:pid:token``) and a
``heartbeat`` (Unix seconds, renewed every ``lease / 4`` while the driver lives). A trial
is **stale** when its owner is gone: a process on this host that no longer runs (known at
once, so the same command rerun after a crash or Ctrl-C recovers immediately), or a
heartbeat older than the lease (another host; a hung driver). Only stale trials are
reaped: failed, marked ``requeued`` (not counted toward ``n_trials``) and their parameters
re-enqueued, so the rerun plans the same run ids and finished runs come from the cache.

>>> me = Owner.me()
>>> is_stale({"owner": me.claim(1000.0)}, started=0.0, now=1010.0, lease_sec=60)
False
>>> is_stale({"owner": Owner("elsewhere", 1, "x").claim(1000.0)}, started=0.0, now=1100.0,
...          lease_sec=60)
True
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)

# A live driver claims a trial right after asking it (milliseconds apart). A trial that
# was already there when a driver started and is still unclaimed this long after its start
# was asked by a driver that died in between: it is reaped like any stale trial.
CLAIM_GRACE_SEC = 5.0


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex[:8])

    @property
    def text(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    def claim(self, heartbeat: float) -> dict[str, Any]:
        """The ``owner`` user attr: who, and when it was last seen alive (one storage
        write claims a trial and renews it)."""
        return {"id": self.text, "heartbeat": heartbeat}

    @classmethod
    def parse(cls, text: Any) -> Owner | None:
        try:
            host, pid, token = str(text).rsplit(":", 2)
            return cls(host, int(pid), token)
        except ValueError:
            return None


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it runs
        return True
    return True


def is_stale(attrs: dict[str, Any], started: float, now: float, lease_sec: float) -> bool:
    """Whether a RUNNING trial's driver is gone (see the module docstring). A trial with
    no owner (a driver from before ownership) goes by its start time."""
    claim = attrs.get("owner")
    claim = claim if isinstance(claim, dict) else {}
    heartbeat = claim.get("heartbeat", started)
    if not isinstance(heartbeat, int | float):
        heartbeat = started
    if now - heartbeat > lease_sec:
        return True
    owner = Owner.parse(claim["id"]) if "id" in claim else None
    return owner is not None and owner.host == socket.gethostname() and not _process_runs(owner.pid)


def owner_id(trial: optuna.trial.FrozenTrial) -> str | None:
    claim = trial.user_attrs.get("owner")
    return claim.get("id") if isinstance(claim, dict) else None


def _started(trial: optuna.trial.FrozenTrial) -> float:
    return trial.datetime_start.timestamp() if trial.datetime_start else 0.0


def mark(study: optuna.Study, trial: optuna.trial.FrozenTrial, key: str, value: Any) -> None:
    """Set a user attr on a trial this process holds only as a ``FrozenTrial``.

    Not a public Optuna API, on purpose: Optuna offers ``Trial.set_user_attr`` only on
    the live ``Trial`` its own ``ask`` returned, and a reaped trial belongs to a driver
    that is gone (an orphan, to an ask that never returned). The reaper must still mark
    it (``requeued``: not counted toward ``n_trials``; ``fail_reason``: why), and the
    storage call is the only way. This is the one place lambda_hat reaches past the
    public API."""
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Fail ``trial`` (not counted) and enqueue its parameters: the rerun plans the same
    run ids (same config, same common seeds), so finished runs come from the cache."""
    mark(study, trial, "fail_reason", reason)
    mark(study, trial, "requeued", True)  # (not counted)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    attempt = trial.user_attrs.get("attempt", 1)
    study.enqueue_trial(trial.params, user_attrs={"attempt": attempt + 1})


def running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def reap_stale_trials(
    study: optuna.Study,
    lease_sec: float,
    mine: Owner | None = None,
    unclaimed_before: int | None = None,
) -> int:
    """Fail and re-enqueue the RUNNING trials whose driver is gone; never ``mine``'s,
    never a live driver's. Trials numbered below ``unclaimed_before`` (those there when
    this driver started) that no driver ever claimed are gone too once older than
    ``CLAIM_GRACE_SEC``. Returns how many were re-enqueued (new trials)."""
    now = time.time()

    def gone(trial: optuna.trial.FrozenTrial) -> bool:
        if "owner" not in trial.user_attrs and unclaimed_before is not None:
            return trial.number < unclaimed_before and now - _started(trial) > CLAIM_GRACE_SEC
        return is_stale(trial.user_attrs, _started(trial), now, lease_sec)

    stale = [
        trial
        for trial in running(study)
        if (mine is None or owner_id(trial) != mine.text) and gone(trial)
    ]
    requeued = 0
    for trial in stale:
        if trial.params:
            _requeue(study, trial, "stale: its driver died")
            requeued += 1
        else:  # its driver died inside the ask, before any parameter: nothing to rerun
            mark(study, trial, "fail_reason", "stale: its driver died during the ask")
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if stale:
        log.warning(
            "study %s: failed %d stale trials, re-enqueued %d",
            study.study_name, len(stale), requeued,
        )  # fmt: skip
    return requeued


def live_running(study: optuna.Study, lease_sec: float) -> int:
    """RUNNING trials whose driver is alive (this one's included): they will finish. A
    trial without an owner is not counted: it is an ask that was cut off (failed by its
    driver at the end) or a driver that died between asking and claiming it."""
    now = time.time()
    return sum(
        "owner" in trial.user_attrs
        and not is_stale(trial.user_attrs, _started(trial), now, lease_sec)
        for trial in running(study)
    )


def fail_orphans(study: optuna.Study, asked: Iterable[range]) -> int:
    """Fail the RUNNING trials without an owner that this driver's own asks created (an
    ask cut off by a lost connection after it created its trial; ``asked`` holds the
    trial numbers each ask could have made). Nothing to rerun, so no re-enqueue."""
    windows = list(asked)
    orphans = [
        trial
        for trial in running(study)
        if "owner" not in trial.user_attrs and any(trial.number in w for w in windows)
    ]
    for trial in orphans:
        mark(study, trial, "fail_reason", "orphan: ask cut off")
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if orphans:
        log.warning("study %s: failed %d orphaned trials", study.study_name, len(orphans))
    return len(orphans)


def enqueued(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether the trial was enqueued (a reaped trial's rerun, a user's enqueue): its
    parameters were fixed, not proposed by this run's sampler. (``enqueue_trial`` keeps
    them in the trial's ``fixed_params`` system attr, which ``FrozenTrial`` shows.)"""
    frozen = next((t for t in running(study) if t.number == trial.number), None)
    return frozen is not None and "fixed_params" in frozen.system_attrs


class Heartbeat(threading.Thread):
    """Renews the ``heartbeat`` of this driver's open trials while it lives."""

    def __init__(
        self,
        study: optuna.Study,
        owner: Owner,
        open_trials: Callable[[], list[optuna.Trial]],
        every_sec: float,
    ):
        super().__init__(name="trial-heartbeat", daemon=True)
        self.study, self.owner = study, owner
        self.open_trials, self.every_sec = open_trials, every_sec
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every_sec):
            for trial in self.open_trials():
                try:
                    trial.set_user_attr("owner", self.owner.claim(time.time()))
                except Exception as error:  # noqa: BLE001 - retried at the next beat
                    log.debug("heartbeat of trial %d: %s", trial.number, error)
