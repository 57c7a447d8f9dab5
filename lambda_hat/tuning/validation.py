"""Validation: the error of a configuration measured on runs it was not selected on.

A study's search picks its best trials on their own noise, so the best search objective
is biased low (the winner's curse). Here the top-k configurations of a finished study are
each rerun on R fresh seeds (the study's validation seeds, disjoint from every search
seed); the *validated error* of a configuration is the mean |llc_hat − llc_ref| over those
runs with a 95 % t interval, and the recommended configuration is the one with the lowest
validated error. Runs are cached by run id, so validating again recomputes nothing.

A configuration's R runs on one problem are one submission (``SubmitGroup``): one task
that runs them one after the other on one worker, each with its own run id, seed, files
and row. Nothing prunes validation, so nothing is lost by grouping; the workers stay
busy with the other groups and studies, and the campaign creates R times fewer task runs.

The intervals are ``lambda_hat.tuning.stats``'s; what a configuration's validated error is
(absolute for one problem, the family's relative error for a recipe) is the study kind's.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from lambda_hat.tuning.driver import FirstDone
from lambda_hat.tuning.kinds import Member, StudyKind, member_of
from lambda_hat.tuning.search_space import MethodSpace
from lambda_hat.tuning.storage import counted
from lambda_hat.tuning.trials import (
    MAX_ATTEMPTS,
    RunOutcome,
    RunPlan,
    group_results,
    plan_runs,
    study_seeds,
)

# ``submit_group(plans) -> future``: one task that runs ``plans`` in order; its result is
# one result dict per plan.
SubmitGroup = Callable[[list[RunPlan]], Hashable]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A configuration the search found, with its search objective (mean over repeats)."""

    config_id: str
    hyperparams: dict[str, Any]
    trial_number: int
    search_objective: float
    search_objective_se: float | None


def top_configurations(study: optuna.Study, k: int) -> list[Candidate]:
    """The ``k`` distinct configurations with the lowest search objective among COMPLETE
    trials (a configuration re-enqueued after a crash appears once)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    ranked = sorted(
        (t for t in complete if "config_id" in t.user_attrs), key=lambda t: (t.value, t.number)
    )
    chosen: dict[str, Candidate] = {}
    for trial in ranked:
        config_id = trial.user_attrs["config_id"]
        if config_id not in chosen and len(chosen) < k:
            chosen[config_id] = Candidate(
                config_id,
                dict(trial.params),
                trial.number,
                trial.value,
                trial.user_attrs.get("objective_se"),
            )
    return list(chosen.values())


def validation_plans(
    candidates: list[Candidate],
    space: MethodSpace,
    *,
    study_name: str,
    pids: list[str],
    method: str,
    seeds: int,
    budget_sec: float,
) -> list[RunPlan]:
    """R runs per candidate on each problem, on the study's validation seeds (the same R
    seeds for every candidate, so their errors are compared on the same noise)."""
    fresh = study_seeds(study_name, seeds, "validation")
    return [
        plan
        for candidate in candidates
        for plan in plan_runs(
            space.config(candidate.hyperparams),
            candidate.hyperparams,
            method=method,
            pids=pids,
            seeds=fresh,
            budget_sec=budget_sec,
            stage="validation",
            trial_number=candidate.trial_number,
        )  # fmt: skip
    ]


def run_groups(plans: list[RunPlan]) -> list[list[int]]:
    """Indices of ``plans`` grouped by (problem, configuration), in plan order."""
    groups: dict[tuple, list[int]] = {}
    for index, plan in enumerate(plans):
        groups.setdefault((plan.pid, plan.method, plan.config_id, plan.stage), []).append(index)
    return list(groups.values())


def run_all(
    plans: list[RunPlan],
    *,
    judge: Callable[[RunPlan, dict[str, Any]], RunOutcome],
    submit_group: SubmitGroup,
    first_done: FirstDone,
    record: Callable[[RunOutcome], None] | None = None,
) -> list[RunOutcome]:
    """Submit every plan, a configuration's runs on one problem as one group; record each
    run as its group finishes (a lost run is submitted again, like in the search), and
    return the outcomes in plan order, each judged by ``judge(plan, result)``
    (``StudyKind.judge`` against the plan's own problem)."""
    plans = list(plans)
    in_flight: dict[Hashable, list[int]] = {}
    for group in run_groups(plans):
        in_flight[submit_group([plans[index] for index in group])] = group
    done: dict[int, RunOutcome] = {}
    while in_flight:
        future = first_done(list(in_flight))
        group = in_flight.pop(future)
        again = []
        for index, result in zip(group, group_results(future, len(group)), strict=True):
            if result["status"] == "lost" and plans[index].attempt < MAX_ATTEMPTS:
                log.warning("run %s lost (%s); running it again", plans[index].run_id,
                            result.get("error"))  # fmt: skip
                plans[index] = replace(plans[index], attempt=plans[index].attempt + 1)
                again.append(index)
                continue
            outcome = judge(plans[index], result)
            if record is not None:
                record(outcome)
            done[index] = outcome
        if again:
            in_flight[submit_group([plans[index] for index in again])] = again
    return [done[index] for index in range(len(plans))]


def recommend(
    candidates: list[Candidate],
    validation_rows: list[dict[str, Any]],
    kind: StudyKind,
    members: list[Member],
) -> list[dict[str, Any]]:
    """The one recommendation rule: each candidate's validated figures from its
    validation rows, best first: the lowest validated error among candidates with runs
    and none failed, then the rest."""
    scored = []
    for candidate in candidates:
        rows = [r for r in validation_rows if r["config_id"] == candidate.config_id]
        summary = kind.validated(rows, members)
        scored.append({"candidate": candidate, "validated": summary})
    return sorted(
        scored,
        key=lambda s: (
            s["validated"]["failed"] > 0 or not s["validated"]["n_runs"],
            math.inf if s["validated"]["mean"] is None else s["validated"]["mean"],
        ),
    )


def candidate_fields(candidate: Candidate | None) -> dict[str, Any]:
    """The leaderboard's columns for the recommended configuration (null without one)."""
    return {
        "config_id": candidate.config_id if candidate else None,
        "params_json": json.dumps(candidate.hyperparams, sort_keys=True) if candidate else None,
        "search_trial_number": candidate.trial_number if candidate else None,
        "search_objective": candidate.search_objective if candidate else None,
        "search_objective_se": candidate.search_objective_se if candidate else None,
    }


def count_fields(counts: dict[str, int]) -> dict[str, int]:
    """The leaderboard's trial counts of a study."""
    return {
        "trials_done": counts.get("done", 0),
        "trials_pruned": counts.get("pruned", 0),
        "trials_failed": counts.get("failed", 0),
    }


def leaderboard_row(
    *,
    study_name: str,
    method: str,
    kind: StudyKind,
    members: list[Member],
    candidates: list[Candidate],
    validation_rows: list[dict[str, Any]],
    counts: dict[str, int],
) -> dict[str, Any]:
    """One study's leaderboard row: the recommended configuration with its validated
    error (the kind's figures: absolute and relative error, bias and sd for one problem;
    the family's mean relative error for a recipe), the search objective beside it.
    Without validation runs the best search configuration is shown, validated fields
    null."""
    ranked = recommend(candidates, validation_rows, kind, members)
    best = ranked[0] if ranked else None
    validated = best["validated"] if best else {}
    return {
        "kind": kind.name,
        "study_name": study_name,
        "problem_name": kind.label(members),
        "pid": kind.pid(members),
        "method": method,
        **candidate_fields(best["candidate"] if best else None),
        **kind.validated_fields(validated, members),
        "n_validation_runs": validated.get("n_runs", 0),
        "n_validation_failed": validated.get("failed", 0),
        "n_candidates": len(candidates),
        **count_fields(counts),
    }


def judged_rows(runs: list[RunOutcome], members: list[Member]) -> list[dict[str, Any]]:
    """What the recommendation reads of each run, as its ``runs.parquet`` row holds it:
    the leaderboard is built from the outcomes in hand, not read back from disk."""
    return [
        {
            "config_id": run.plan.config_id,
            "pid": run.plan.pid,
            "llc_hat": run.result.get("llc_hat"),
            "abs_error": run.abs_error,
            "rel_error": (
                None
                if run.abs_error is None
                else run.abs_error / abs(member_of(members, run.plan.pid).llc_ref)
            ),
        }
        for run in runs
    ]


@dataclass
class StudyResult:
    """What a finished study hands back to its campaign: its family, its top
    configurations, its leaderboard row (built once, here, from the validation runs in
    hand) and its run timeline."""

    study_name: str
    kind: str  # "problem" or "recipe"
    method: str
    pid: str  # a recipe's: "recipe-<set>"
    problem_name: str
    members: list[Member]
    candidates: list[Candidate]
    counts: dict[str, int]
    trials_run_now: int
    trials_finished: int
    leaderboard_row: dict[str, Any]
    ask_submit_sec: list[float] = field(default_factory=list)
    # (stage, trial number, repeat, started_at, finished_at) of each run of this campaign
    timeline: list[tuple] = field(default_factory=list)


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Told trials by outcome (reaped and lost ones are not counted: they ran again)."""
    told = [t for t in study.get_trials(deepcopy=False) if counted(t)]
    return {
        "done": len(told),
        "complete": sum(t.state == TrialState.COMPLETE for t in told),
        "pruned": sum(t.state == TrialState.PRUNED for t in told),
        "failed": sum(t.state == TrialState.FAIL for t in told),
    }
