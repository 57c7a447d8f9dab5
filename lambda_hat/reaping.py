"""Trials a dead driver left behind: stale RUNNING trials are failed and their parameters
re-enqueued (the rerun plans the same run ids, so finished runs come from the cache);
trials an interrupted ``ask`` created without parameters are failed. A re-enqueued trial is
marked ``requeued`` and does not count toward ``n_trials`` (its rerun does)."""

from __future__ import annotations

import logging

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)


def _requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """Fail ``trial`` (not counted) and enqueue its parameters: the rerun plans the same
    run ids (same config, same common seeds), so finished runs come from the cache."""
    # The storage call works for live and frozen trials alike (FrozenTrial has no setter).
    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
    study._storage.set_trial_user_attr(trial._trial_id, "requeued", True)  # (not counted)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    attempt = trial.user_attrs.get("attempt", 1)
    study.enqueue_trial(trial.params, user_attrs={"attempt": attempt + 1})


def reap_stale_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials left by a dead driver and re-enqueue their parameters
    (Optuna's heartbeat does not run under ask/tell, so nobody else will).
    Call only when no other driver works on this study."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        if trial.params:
            _requeue(study, trial, "stale: its driver died")
        else:  # created by an ask that failed half-way: nothing to rerun
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if stale:
        log.warning(
            "study %s: failed and re-enqueued %d stale trials", study.study_name, len(stale)
        )
    return len(stale)


def fail_orphans(study: optuna.Study) -> int:
    """Fail the RUNNING trials left when a driver has nothing in flight: an ask cut off by
    a lost connection after it created its trial. Nothing to rerun, so no re-enqueue."""
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "orphan: ask cut off")
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if orphans:
        log.warning("study %s: failed %d orphaned trials", study.study_name, len(orphans))
    return len(orphans)
