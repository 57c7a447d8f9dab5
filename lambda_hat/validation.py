"""Validation: the error of a configuration measured on runs it was not selected on.

A study's search picks its best trials on their own noise, so the best search objective
is biased low (the winner's curse). Here the top-k configurations of a finished study are
each rerun on R fresh seeds (the study's validation seeds, disjoint from every search
seed); the *validated error* of a configuration is the mean |llc_hat − llc_ref| over those
runs with a 95 % t interval, and the recommended configuration is the one with the lowest
validated error. Runs are cached by run id, so validating again recomputes nothing.

>>> summary = error_summary([0.1, 0.3, 0.2], [3.1, 2.7, 3.2], llc_ref=3.0)
>>> round(summary["mean"], 3), round(summary["ci_low"], 3), round(summary["ci_high"], 3)
(0.2, 0.0, 0.448)
>>> round(summary["bias"], 3), summary["n"]
(0.0, 3)
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import TrialState

from lambda_hat.runners.run_method import run_id_for
from lambda_hat.search_space import MethodSpace
from lambda_hat.storage import counted
from lambda_hat.tuning import (
    FirstDone,
    RunOutcome,
    RunPlan,
    Submit,
    judge_run,
    resolve,
    study_seeds,
)


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean (None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    from scipy import stats  # scipy comes with jax; imported here to keep imports light

    mean = statistics.fmean(values)
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean - half, mean + half


def error_summary(abs_errors: list[float], llc_hats: list[float], llc_ref: float) -> dict:
    """Mean absolute error with its 95 % t interval (its lower end clipped at 0: an
    absolute error is never negative), and the bias and sd of llc_hat."""
    interval = t_interval(abs_errors)
    return {
        "mean": statistics.fmean(abs_errors) if abs_errors else None,
        "ci_low": None if interval is None else max(interval[0], 0.0),
        "ci_high": None if interval is None else interval[1],
        "bias": statistics.fmean(llc_hats) - llc_ref if llc_hats else None,
        "sd": statistics.stdev(llc_hats) if len(llc_hats) > 1 else None,
        "llc_mean": statistics.fmean(llc_hats) if llc_hats else None,
        "n": len(abs_errors),
    }


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
    pid: str,
    method: str,
    seeds: int,
    budget_sec: float,
) -> list[RunPlan]:
    """R runs per candidate on the study's validation seeds (the same R seeds for every
    candidate, so their errors are compared on the same noise)."""
    fresh = study_seeds(study_name, seeds, "validation")
    plans = []
    for candidate in candidates:
        config = space.config(candidate.hyperparams)
        for seed in fresh:
            plans.append(
                RunPlan(
                    run_id_for(pid, method, config, seed, budget_sec),
                    method,
                    config.model_dump(mode="json"),
                    dict(candidate.hyperparams),
                    candidate.config_id,
                    seed,
                    budget_sec,
                    "validation",
                    None,
                    candidate.trial_number,
                )
            )
    return plans


def run_all(
    plans: list[RunPlan],
    *,
    submit: Submit,
    first_done: FirstDone,
    llc_ref: float | None = None,
    se_ref: float | None = None,
    record: Callable[[RunOutcome], None] | None = None,
    judge: Callable[[RunPlan, dict[str, Any]], RunOutcome] | None = None,
) -> list[RunOutcome]:
    """Submit every plan, record each run as it finishes (a lost run is submitted again,
    like in the search), and return the outcomes in plan order. Each run is judged
    against ``llc_ref``, or by ``judge`` where the plans span problems."""
    if judge is None:
        judge = lambda plan, result: judge_run(plan, result, llc_ref, se_ref)  # noqa: E731
    in_flight: dict[Hashable, tuple[int, RunPlan]] = {
        submit(plan): (index, plan) for index, plan in enumerate(plans)
    }
    done: dict[int, RunOutcome] = {}
    while in_flight:
        future = first_done(list(in_flight))
        index, plan = in_flight.pop(future)
        result, again = resolve(future, plan, submit)
        if again is not None:
            in_flight[again] = (index, replace(plan, attempt=plan.attempt + 1))
            continue
        outcome = judge(plan, result)
        if record is not None:
            record(outcome)
        done[index] = outcome
    return [done[index] for index in range(len(plans))]


def recommend(
    candidates: list[Candidate], validation_rows: list[dict[str, Any]], llc_ref: float
) -> list[dict[str, Any]]:
    """Each candidate's validated figures from its validation rows, best first: the lowest
    validated error among candidates none of whose validation runs failed, then the rest."""
    scored = []
    for candidate in candidates:
        rows = [r for r in validation_rows if r["config_id"] == candidate.config_id]
        ok = [r for r in rows if r["abs_error"] is not None]
        summary = error_summary(
            [r["abs_error"] for r in ok], [r["llc_hat"] for r in ok], llc_ref=llc_ref
        )
        failed = len(rows) - len(ok)
        scored.append({"candidate": candidate, "validated": summary, "failed": failed})
    return sorted(
        scored,
        key=lambda s: (
            s["failed"] > 0,
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
    problem_name: str,
    pid: str,
    method: str,
    reference: dict[str, Any],
    candidates: list[Candidate],
    validation_rows: list[dict[str, Any]],
    counts: dict[str, int],
) -> dict[str, Any]:
    """One study's leaderboard row: the recommended configuration with its validated
    error (mean, 95 % interval, bias, sd) and its search objective beside it. Without
    validation runs the best search configuration is shown, its validated fields null."""
    llc_ref = reference["llc_ref"]
    ranked = recommend(candidates, validation_rows, llc_ref)
    best = ranked[0] if ranked else None
    candidate = best["candidate"] if best else None
    validated = best["validated"] if best and best["validated"]["n"] else {}
    rel = lambda v: None if v is None else v / abs(llc_ref)  # noqa: E731
    return {
        "kind": "problem",
        "problem_name": problem_name,
        "pid": pid,
        "method": method,
        **candidate_fields(candidate),
        "validated_error_mean": validated.get("mean"),
        "validated_error_ci_low": validated.get("ci_low"),
        "validated_error_ci_high": validated.get("ci_high"),
        "validated_rel_error_mean": rel(validated.get("mean")),
        "validated_rel_error_ci_low": rel(validated.get("ci_low")),
        "validated_rel_error_ci_high": rel(validated.get("ci_high")),
        "n_problems": 1,
        "validated_bias": validated.get("bias"),
        "validated_sd": validated.get("sd"),
        "validated_llc_mean": validated.get("llc_mean"),
        "n_validation_runs": validated.get("n", 0),
        "n_validation_failed": best["failed"] if best else 0,
        "n_candidates": len(candidates),
        "llc_ref": llc_ref,
        "se_ref": reference["se_ref"],
        **count_fields(counts),
    }


def trial_counts(study: optuna.Study) -> dict[str, int]:
    """Told trials by outcome (reaped and lost ones are not counted: they ran again)."""
    told = [t for t in study.get_trials(deepcopy=False) if counted(t)]
    return {
        "done": len(told),
        "complete": sum(t.state == TrialState.COMPLETE for t in told),
        "pruned": sum(t.state == TrialState.PRUNED for t in told),
        "failed": sum(t.state == TrialState.FAIL for t in told),
    }
