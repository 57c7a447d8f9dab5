"""Recipes: one configuration per method, tuned across a family of problems.

Per-problem tuning fits a configuration to one problem's scale. A *recipe* study instead
judges each configuration on every problem of a set: a trial runs it ``repeats`` times on
each problem (on the study's common seeds) and its objective is the family error, the mean
over problems of each problem's mean relative error |llc_hat − llc_ref| / llc_ref. The
pruner sees one step per problem (its mean relative error), so a configuration that loses
on the first problems stops there; the Wilcoxon pruner pairs them with the best trial's
errors on the same problems.

Step sizes: SGLD's drift is (ε/2)·nβ·∇L (nβ = n / log n), so a step size right at
n = 1000 is about 6× too large at n = 8000. In a recipe study SGLD's step size is tuned
in units of 1/(nβ) (``step_size_scale: per_nbeta``), unless the methods file fixes
``step_size_scale``.
pSGLD needs no scale (its preconditioner divides by the gradient's size) and MCLMC tunes
its own step. ``benchmarks/recipes.py`` measures the choice.

>>> summary = family_error({"p_a": [0.10, 0.12], "p_b": [0.30, 0.26]})
>>> round(summary["mean"], 3), summary["n_problems"], summary["n_runs"]
(0.195, 2, 4)
>>> summary["ci_low"] < summary["mean"] < summary["ci_high"]
True
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from lambda_hat.runners.run_method import run_id_for
from lambda_hat.search_space import FloatParam, MethodSpace
from lambda_hat.trials import (
    Outcome,
    RunOutcome,
    RunPlan,
    Stage,
    config_id_for,
    judge_run,
)
from lambda_hat.tuning import Driver, _OpenTrial, first_wave
from lambda_hat.validation import Candidate, candidate_fields, count_fields

# SGLD's step size in a recipe study, in units of 1/(nβ): ε·nβ from 1e-4 to 1 covers about
# the absolute 1e-6 … 1e-2 of a per-problem study at n = 500 … 2000 (nβ = 80 … 263; the
# config allows at most 1).
RECIPE_STEP_RANGE = (1.0e-4, 1.0)


@dataclass(frozen=True)
class Member:
    """One problem of the family, with its reference."""

    pid: str
    name: str
    llc_ref: float
    se_ref: float


def members_of(specs: list[dict[str, Any]], references: list[dict[str, Any]]) -> list[Member]:
    """The family's members from its specs and their references (in the same order)."""
    return [
        Member(ref["pid"], spec["name"], ref["llc_ref"], ref["se_ref"])
        for spec, ref in zip(specs, references, strict=True)
    ]


def recommended_config(row: dict[str, Any], spaces: dict[str, MethodSpace]) -> dict[str, Any]:
    """A leaderboard row's recommendation as a full method config (a recipe's in its
    recipe space: SGLD's step size per nβ)."""
    space = spaces[row["method"]]
    if row.get("kind") == "recipe":
        space = recipe_space(space)
    return space.config(json.loads(row["params_json"])).model_dump(mode="json")


def study_name_for(set_name: str, method: str) -> str:
    """The Optuna study of a recipe.

    >>> study_name_for("dln-family", "sgld")
    'recipe-dln-family:sgld'
    """
    return f"recipe-{set_name}:{method}"


def recipe_space(space: MethodSpace) -> MethodSpace:
    """The space a recipe study tunes: SGLD's step size in units of 1/(nβ) unless the
    methods file fixes ``step_size_scale`` itself.

    >>> from lambda_hat.search_space import load_methods
    >>> space = recipe_space(load_methods()["sgld"])
    >>> space.fixed["step_size_scale"], space.space["step_size"].low
    ('per_nbeta', 0.0001)
    """
    tuned = space.space.get("step_size")
    if space.method != "sgld" or "step_size_scale" in space.fixed or tuned is None:
        return space
    low, high = RECIPE_STEP_RANGE
    return MethodSpace(
        method=space.method,
        fixed={**space.fixed, "step_size_scale": "per_nbeta"},
        space={**space.space, "step_size": FloatParam(type="float", low=low, high=high, log=True)},
    )


def judge_relative(plan: RunPlan, result: dict[str, Any], member: Member) -> RunOutcome:
    """The run judged against its own problem's reference; its objective is the
    relative error."""
    run = judge_run(plan, result, member.llc_ref, member.se_ref)
    if run.abs_error is None:
        return run
    return RunOutcome(plan, result, run.abs_error / abs(member.llc_ref), run.abs_error, None)


def family_error(per_problem: dict[str, list[float]], level: float = 0.95) -> dict[str, Any]:
    """The mean over problems of each problem's mean relative error, with a ``level``
    t interval for the run-to-run noise with these problems fixed: SE² = Σ_p s_p²/k_p / P²
    on Σ_p (k_p − 1) degrees of freedom (null where a problem has a single run)."""
    errors = {pid: values for pid, values in per_problem.items() if values}
    if not errors:
        return {"mean": None, "ci_low": None, "ci_high": None, "se": None, "n_problems": 0,
                "n_runs": 0, "per_problem": {}}  # fmt: skip
    means = {pid: statistics.fmean(values) for pid, values in errors.items()}
    count = len(means)
    mean = statistics.fmean(means.values())
    low = high = se = None
    if all(len(values) > 1 for values in errors.values()):
        from scipy import stats  # (comes with jax; imported here to keep imports light)

        se = math.sqrt(sum(statistics.variance(v) / len(v) for v in errors.values())) / count
        dof = sum(len(values) - 1 for values in errors.values())
        half = float(stats.t.ppf(0.5 + level / 2, dof)) * se
        low, high = max(mean - half, 0.0), mean + half
    return {
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "se": se,
        "n_problems": count,
        "n_runs": sum(len(values) for values in errors.values()),
        "per_problem": means,
    }


def family_plans(
    config: dict[str, Any],
    hyperparams: dict[str, Any],
    *,
    method: str,
    members: list[Member],
    seeds: list[int],
    budget_sec: float,
    stage: Stage,
    trial_number: int | None = None,
) -> list[RunPlan]:
    """One run per (problem, seed), problem by problem; repeat k uses ``seeds[k]`` (the
    repeat is noted for search runs only, as in a per-problem study)."""
    space_config = MethodSpace(method=method, fixed=config).config({})
    config_id = config_id_for(method, config)
    return [
        RunPlan(
            run_id_for(member.pid, method, space_config, seed, budget_sec),
            method,
            config,
            dict(hyperparams),
            config_id,
            seed,
            budget_sec,
            stage,
            repeat if stage == "search" else None,
            trial_number,
            pid=member.pid,
        )
        for member in members
        for repeat, seed in enumerate(seeds)
    ]


@dataclass
class RecipeDriver(Driver):
    """A ``Driver`` whose trials span the family: ``repeats`` runs on each member, the
    pruner told one step per member, the trial told the family error.

    ``pid``, ``llc_ref`` and ``se_ref`` of the base class are unused: each run is judged
    against its own member's reference."""

    members: list[Member] = field(default_factory=list)

    def _key(self, plan: RunPlan) -> Hashable:
        return (plan.pid, plan.repeat)

    def _judge_run(self, plan: RunPlan, result: dict) -> RunOutcome:
        return judge_relative(plan, result, self._member(plan.pid))

    def _member(self, pid: str | None) -> Member:
        return next(member for member in self.members if member.pid == pid)

    def _first_plans(self, entry: _OpenTrial) -> list[RunPlan]:
        # The members the pruner needs before it can judge, all their repeats at once.
        entry.submitted = first_wave(self.pruner, len(self.members)) * self.repeats
        return entry.plans[: entry.submitted]

    def _next_plans(self, entry: _OpenTrial) -> list[RunPlan]:
        start = entry.submitted
        entry.submitted += self.repeats
        return entry.plans[start : entry.submitted]

    def _open(self, trial: optuna.Trial, seeds: list[int]) -> _OpenTrial:
        config = self.space.config(trial.params).model_dump(mode="json")
        plans = family_plans(
            config, trial.params, method=self.method, members=self.members, seeds=seeds,
            budget_sec=self.budget_sec, stage="search", trial_number=trial.number,
        )  # fmt: skip
        trial.set_user_attr("owner", self.owner.claim(time.time()))
        trial.set_user_attr("config_id", plans[0].config_id)
        trial.set_user_attr("run_ids", [plan.run_id for plan in plans])
        return _OpenTrial(trial, plans)

    def _per_problem(self, entry: _OpenTrial) -> dict[str, list[float]]:
        return {
            member.pid: [
                entry.done[(member.pid, k)].objective
                for k in range(self.repeats)
                if (member.pid, k) in entry.done
            ]
            for member in self.members
        }

    def _advance(self, entry: _OpenTrial) -> Outcome | None:
        runs = list(entry.done.values())
        failed = [run for run in runs if run.objective is None]
        if failed:
            return self._tell_family(entry, TrialState.FAIL, failed[0])
        per_problem = self._per_problem(entry)
        trial = entry.trial
        while entry.reported < len(self.members):
            errors = per_problem[self.members[entry.reported].pid]
            if len(errors) < self.repeats:
                break
            trial.report(statistics.fmean(errors), step=entry.reported)
            entry.reported += 1
        if len(runs) == len(entry.plans):
            return self._tell_family(entry, TrialState.COMPLETE)
        if trial.should_prune():
            return self._tell_family(entry, TrialState.PRUNED)
        return None

    def _tell_family(
        self, entry: _OpenTrial, state: TrialState, failed: RunOutcome | None = None
    ) -> Outcome:
        trial = entry.trial
        runs = [entry.done[key] for key in sorted(entry.done, key=_plan_order(entry))]
        summary = family_error(
            {pid: [e for e in errors if e is not None]
             for pid, errors in self._per_problem(entry).items()}
        )  # fmt: skip
        names = {member.pid: member.name for member in self.members}
        trial.set_user_attr(
            "problem_errors", {names[pid]: err for pid, err in summary["per_problem"].items()}
        )
        trial.set_user_attr("objective_se", summary["se"])
        trial.set_user_attr("problems_done", summary["n_problems"])
        trial.set_user_attr("runtime_sec", sum(r.result.get("runtime_sec") or 0.0 for r in runs))
        value, reason = None, None
        if state == TrialState.FAIL:
            assert failed is not None
            reason = f"{names[failed.plan.pid]} repeat {failed.plan.repeat}: {failed.reason}"
            trial.set_user_attr("status", failed.result.get("status", "error"))
            trial.set_user_attr("fail_reason", reason)
            self.study.tell(trial.number, state=state, skip_if_finished=True)
        elif state == TrialState.PRUNED:
            trial.set_user_attr("status", "pruned")
            self.study.tell(trial.number, state=state, skip_if_finished=True)
        else:
            value = summary["mean"]
            trial.set_user_attr("status", "ok")
            self.study.tell(trial.number, value, skip_if_finished=True)
        return Outcome(trial.number, state, value, reason, runs, dict(trial.params))


def _plan_order(entry: _OpenTrial):
    order = {(plan.pid, plan.repeat): index for index, plan in enumerate(entry.plans)}
    return order.__getitem__


def recommend_recipe(
    candidates: list[Candidate], rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each candidate's family error on its validation rows, best first: the lowest among
    candidates none of whose runs failed, then the rest."""
    scored = []
    for candidate in candidates:
        mine = [row for row in rows if row["config_id"] == candidate.config_id]
        summary = family_error(_errors_by_problem(mine))
        failed = sum(row["rel_error"] is None for row in mine)
        scored.append({"candidate": candidate, "validated": summary, "failed": failed})
    return sorted(
        scored,
        key=lambda s: (
            s["failed"] > 0 or not s["validated"]["n_runs"],
            math.inf if s["validated"]["mean"] is None else s["validated"]["mean"],
        ),
    )


def _errors_by_problem(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    errors: dict[str, list[float]] = {}
    for row in rows:
        errors.setdefault(row["pid"], [])
        if row["rel_error"] is not None:
            errors[row["pid"]].append(row["rel_error"])
    return errors


def transfer_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A configuration's family error on its transfer rows (held-out problems)."""
    summary = family_error(_errors_by_problem(rows))
    summary["failed"] = sum(row["rel_error"] is None for row in rows)
    return summary


def recipe_leaderboard_row(
    *,
    study_name: str,
    set_name: str,
    method: str,
    candidates: list[Candidate],
    validation_rows: list[dict[str, Any]],
    counts: dict[str, int],
) -> dict[str, Any]:
    """A recipe study's leaderboard row: its recommended configuration with the family
    error on fresh seeds (mean relative error over problems, 95 % interval)."""
    ranked = recommend_recipe(candidates, validation_rows)
    best = ranked[0] if ranked else None
    candidate = best["candidate"] if best else None
    validated = best["validated"] if best and best["validated"]["n_runs"] else {}
    return {
        "kind": "recipe",
        "study_name": study_name,
        "problem_name": f"recipe-{set_name}",
        "pid": f"recipe-{set_name}",
        "method": method,
        **candidate_fields(candidate),
        "validated_rel_error_mean": validated.get("mean"),
        "validated_rel_error_ci_low": validated.get("ci_low"),
        "validated_rel_error_ci_high": validated.get("ci_high"),
        "n_problems": validated.get("n_problems"),
        "n_validation_runs": validated.get("n_runs", 0),
        "n_validation_failed": best["failed"] if best else 0,
        "n_candidates": len(candidates),
        **count_fields(counts),
    }


def transfer_fields(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The leaderboard's transfer columns from a configuration's transfer rows."""
    summary = transfer_summary(rows)
    return {
        "transfer_rel_error_mean": summary["mean"],
        "transfer_rel_error_ci_low": summary["ci_low"],
        "transfer_rel_error_ci_high": summary["ci_high"],
        "n_transfer_problems": summary["n_problems"],
        "n_transfer_runs": len(rows),
        "n_transfer_failed": summary["failed"],
    }
