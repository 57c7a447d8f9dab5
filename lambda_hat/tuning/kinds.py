"""What differs between a per-problem study and a recipe study, and nothing else.

Both are studies of one method over a *family* of problems (``Member`` s): a per-problem
study is a family of one. The driver (``lambda_hat.tuning.driver``), the run plans, the
validation and the leaderboard row are the same code for both; a ``StudyKind`` says

* how a run is judged (``abs`` or ``huber`` error against its problem's reference, or the
  relative error for a recipe, whose problems have different scales);
* what the pruner sees as one step (a repeat, or one problem's repeats);
* what a trial is told (the mean over repeats, or the mean over problems of each problem's
  mean) and which figures go beside it;
* how a configuration's validation runs are summarised and shown on the leaderboard.

>>> kind = PerProblem()
>>> member = Member("p_demo", "demo", llc_ref=3.0, se_ref=0.1)
>>> kind.study_name([member], "sgld"), kind.label([member])
('p_demo:sgld', 'demo')
>>> Recipe("dln-family").study_name([member], "sgld")
'recipe-dln-family:sgld'
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Literal

from lambda_hat.tuning.stats import error_summary, family_error
from lambda_hat.tuning.trials import (
    ObjectiveKind,
    RunOutcome,
    RunPlan,
    judge_run,
    summarize_runs,
)


@dataclass(frozen=True)
class Member:
    """One problem of a study's family, with its reference."""

    pid: str
    name: str
    llc_ref: float
    se_ref: float
    lambda_theory: float | None = None


def members_of(specs: list[dict[str, Any]], references: list[dict[str, Any]]) -> list[Member]:
    """The family's members from its specs and their references (in the same order)."""
    return [
        Member(ref["pid"], spec["name"], ref["llc_ref"], ref["se_ref"], ref.get("lambda_theory"))
        for spec, ref in zip(specs, references, strict=True)
    ]


def member_of(members: list[Member], pid: str | None) -> Member:
    """The member a plan runs on."""
    return next(member for member in members if member.pid == pid)


def relative_errors(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Run rows' relative errors by problem (failed runs leave their problem present)."""
    errors: dict[str, list[float]] = {}
    for row in rows:
        errors.setdefault(row["pid"], [])
        if row["rel_error"] is not None:
            errors[row["pid"]].append(row["rel_error"])
    return errors


@dataclass(frozen=True)
class PerProblem:
    """A study of one problem: each run judged by ``objective`` against the reference,
    one pruner step per repeat, the trial told the mean over its repeats."""

    objective: ObjectiveKind = "abs"
    huber_k: float = 1.0
    name: Literal["problem"] = "problem"

    @property
    def objective_kind(self) -> str:
        return self.objective

    def study_name(self, members: list[Member], method: str) -> str:
        return f"{members[0].pid}:{method}"

    def label(self, members: list[Member]) -> str:
        return members[0].name

    def pid(self, members: list[Member]) -> str:
        return members[0].pid

    def dashboard_labels(self, members: list[Member], method: str) -> dict[str, Any]:
        (member,) = members
        return {"name": f"{member.name} · {method}",  # (a human name beside <pid>:<method>)
                "problem_name": member.name, "pid": member.pid, "method": method,
                "llc_ref": member.llc_ref, "se_ref": member.se_ref,
                "lambda_theory": member.lambda_theory}  # fmt: skip

    def judge(self, plan: RunPlan, result: dict[str, Any], member: Member) -> RunOutcome:
        return judge_run(plan, result, member.llc_ref, member.se_ref, self.objective, self.huber_k)

    def step(self, plan: RunPlan, members: list[Member]) -> int:
        return plan.repeat or 0

    def step_value(self, steps: list[list[float]], pruner: str) -> float:
        # Wilcoxon pairs each repeat with the best trial's same-seed repeat; the median
        # pruner compares running means.
        values = [step[0] for step in steps]
        return values[-1] if pruner == "wilcoxon" else statistics.fmean(values)

    def summarize(self, runs: list[RunOutcome], members: list[Member]) -> dict[str, Any]:
        """The trial's figures: ``value`` (what a COMPLETE trial is told), ``objective_se``
        and the user attributes shown beside it."""
        summary = summarize_runs(runs, members[0].llc_ref)
        return {
            "value": summary["objective_mean"],
            "objective_se": summary["objective_se"],
            "attrs": {
                **{
                    key: summary[key]
                    for key in (
                        "llc_hats",
                        "llc_hat_mean",
                        "llc_hat_sd",
                        "bias",
                        "objective_se",
                        "repeats_done",
                    )
                },
                "llc_hat": summary["llc_hat_mean"],
                "abs_error": summary["abs_error_mean"],
            },  # fmt: skip
            "row": {
                "trial_llc_mean": summary["llc_hat_mean"],
                "trial_llc_sd": summary["llc_hat_sd"],
                "trial_bias": summary["bias"],
            },
        }

    def failure(self, run: RunOutcome, members: list[Member]) -> str:
        return f"repeat {run.plan.repeat}: {run.reason}"

    def validated(self, rows: list[dict[str, Any]], members: list[Member]) -> dict[str, Any]:
        """A configuration's figures on its validation rows."""
        ok = [row for row in rows if row["abs_error"] is not None]
        summary = error_summary(
            [row["abs_error"] for row in ok], [row["llc_hat"] for row in ok], members[0].llc_ref
        )
        return {**summary, "failed": len(rows) - len(ok)}

    def validated_fields(self, summary: dict[str, Any], members: list[Member]) -> dict[str, Any]:
        """The leaderboard's validated columns: absolute error, relative error, bias, sd."""
        (member,) = members
        shown = summary if summary.get("n_runs") else {}
        rel = lambda v: None if v is None else v / abs(member.llc_ref)  # noqa: E731
        return {
            "validated_error_mean": shown.get("mean"),
            "validated_error_ci_low": shown.get("ci_low"),
            "validated_error_ci_high": shown.get("ci_high"),
            "validated_rel_error_mean": rel(shown.get("mean")),
            "validated_rel_error_ci_low": rel(shown.get("ci_low")),
            "validated_rel_error_ci_high": rel(shown.get("ci_high")),
            "n_problems": 1,
            "validated_bias": shown.get("bias"),
            "validated_sd": shown.get("sd"),
            "validated_llc_mean": shown.get("llc_mean"),
            "llc_ref": member.llc_ref,
            "se_ref": member.se_ref,
        }


@dataclass(frozen=True)
class Recipe:
    """A study across the problems of ``set_name``: each run judged by its relative error
    against its own problem's reference, one pruner step per problem (its mean relative
    error), the trial told the family error (``lambda_hat.tuning.stats.family_error``)."""

    set_name: str
    name: Literal["recipe"] = "recipe"
    objective_kind: str = "relative"

    def study_name(self, members: list[Member], method: str) -> str:
        return f"recipe-{self.set_name}:{method}"

    def label(self, members: list[Member]) -> str:
        return f"recipe-{self.set_name}"

    def pid(self, members: list[Member]) -> str:
        return self.label(members)  # a recipe's leaderboard row has no single problem

    def dashboard_labels(self, members: list[Member], method: str) -> dict[str, Any]:
        return {
            "name": f"recipe {self.set_name} · {method}",
            "set_name": self.set_name,
            "method": method,
            "pids": [member.pid for member in members],
            "problem_names": [member.name for member in members],
        }

    def judge(self, plan: RunPlan, result: dict[str, Any], member: Member) -> RunOutcome:
        run = judge_run(plan, result, member.llc_ref, member.se_ref)
        if run.abs_error is None:
            return run
        return RunOutcome(plan, result, run.abs_error / abs(member.llc_ref), run.abs_error, None)

    def step(self, plan: RunPlan, members: list[Member]) -> int:
        return [member.pid for member in members].index(plan.pid)

    def step_value(self, steps: list[list[float]], pruner: str) -> float:
        return statistics.fmean(steps[-1])

    def summarize(self, runs: list[RunOutcome], members: list[Member]) -> dict[str, Any]:
        errors: dict[str, list[float]] = {member.pid: [] for member in members}
        for run in runs:
            if run.objective is not None:
                errors[run.plan.pid].append(run.objective)
        summary = family_error(errors)
        names = {member.pid: member.name for member in members}
        return {
            "value": summary["mean"],
            "objective_se": summary["se"],
            "attrs": {
                "problem_errors": {names[pid]: e for pid, e in summary["per_problem"].items()},
                "objective_se": summary["se"],
                "problems_done": summary["n_problems"],
            },
            "row": {},
        }

    def failure(self, run: RunOutcome, members: list[Member]) -> str:
        name = member_of(members, run.plan.pid).name
        return f"{name} repeat {run.plan.repeat}: {run.reason}"

    def validated(self, rows: list[dict[str, Any]], members: list[Member]) -> dict[str, Any]:
        summary = family_error(relative_errors(rows))
        return {**summary, "failed": sum(row["rel_error"] is None for row in rows)}

    def validated_fields(self, summary: dict[str, Any], members: list[Member]) -> dict[str, Any]:
        shown = summary if summary.get("n_runs") else {}
        return {
            "validated_rel_error_mean": shown.get("mean"),
            "validated_rel_error_ci_low": shown.get("ci_low"),
            "validated_rel_error_ci_high": shown.get("ci_high"),
            "n_problems": shown.get("n_problems"),
        }


StudyKind = PerProblem | Recipe


def study_kind(name: str, *, objective: ObjectiveKind = "abs", huber_k: float = 1.0,
               set_name: str | None = None) -> StudyKind:  # fmt: skip
    """The kind a flow parameter names (``problem`` or ``recipe``)."""
    if name == "recipe":
        if not set_name:
            raise ValueError("a recipe study needs its set_name")
        return Recipe(set_name)
    if name == "problem":
        return PerProblem(objective, huber_k)
    raise ValueError(f"kind: unknown {name!r} (allowed: problem, recipe)")
