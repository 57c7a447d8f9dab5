"""The ``tune-recipe`` subflow: one method tuned across every problem of a set, from its
first trial to its validated recipe.

1. open (or resume) the Optuna study ``recipe-<set>:<method>``, labelled with its problems;
2. run trials until it has ``n_trials`` finished: each trial runs its configuration
   ``repeats`` times on every problem (one run per problem × repeat, spread over the
   cluster) and is told the mean over problems of each problem's mean relative error; the
   pruner sees one step per problem (``lambda_hat/recipes.py``);
3. validate the top-k configurations on fresh seeds on every problem; every run is a row
   of ``runs.parquet`` (its own problem's pid and reference) as soon as it finishes.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.context import get_run_context

from flows.campaign import current_slots
from flows.checks import DEFAULT_REPEATS, DEFAULT_VALIDATE_TOP_K, DEFAULT_VALIDATION_SEEDS
from flows.progress import StudyProgress
from flows.records import run_row, write_rows
from flows.study import artifact_key, stall_guard, submitter
from lambda_hat.recipe_file import write_recipe
from lambda_hat.recipes import (
    Member,
    RecipeDriver,
    family_error,
    family_plans,
    judge_relative,
    members_of,
    recommended_config,
    study_name_for,
)
from lambda_hat.search_space import MethodSpace
from lambda_hat.settings import Settings
from lambda_hat.storage import StorageRetry, best_value, finished_trials, open_study
from lambda_hat.trials import Outcome, RunOutcome, RunPlan, study_seeds
from lambda_hat.tuning import make_pruner
from lambda_hat.validation import run_all, top_configurations, trial_counts


def recorder(settings: Settings, members: dict[str, Member], context: dict[str, Any]):
    """``record(run)``: the run's row, with its own problem's name and reference."""
    parquet = settings.results_dir.resolve() / "runs.parquet"
    runs_dir = settings.artifacts_dir.resolve() / "runs"

    def row_of(run: RunOutcome) -> dict[str, Any]:
        member = members[run.plan.pid]
        return run_row(
            run,
            {**context, "pid": member.pid, "problem_name": member.name,
             "llc_ref": member.llc_ref, "se_ref": member.se_ref},
        )  # fmt: skip

    def record(run: RunOutcome, extra: dict[str, Any] | None = None) -> None:
        write_rows([{**row_of(run), **(extra or {})}], parquet, runs_dir)

    return record


@flow(name="tune-recipe", flow_run_name="recipe-{method}-{set_name}")
def tune_recipe(
    set_name: str,
    specs: list[dict[str, Any]],
    references: list[dict[str, Any]],
    method: str,
    space: dict[str, Any],
    n_trials: int,
    batch: int,
    budget_sec: float,
    repeats: int = DEFAULT_REPEATS,
    pruner: Literal["wilcoxon", "median", "none"] = "wilcoxon",
    validate_top_k: int = DEFAULT_VALIDATE_TOP_K,
    validation_seeds: int = DEFAULT_VALIDATION_SEEDS,
) -> dict[str, Any]:
    """One recipe study over ``specs`` (their ``references`` in the same order), resumed
    if it exists, then its top-k configurations validated on fresh seeds on every problem."""
    logger = get_run_logger()
    settings = Settings()
    retry = StorageRetry(settings.budgets.storage_retry_sec)
    members = members_of(specs, references)
    by_pid = {member.pid: member for member in members}
    spec_of = {ref["pid"]: spec for spec, ref in zip(specs, references, strict=True)}
    name = study_name_for(set_name, method)
    study = retry(
        "opening the study", open_study, settings.storage_url(), name, 0, make_pruner(pruner)
    )
    labels = {"set_name": set_name, "method": method, "pids": [m.pid for m in members],
              "problem_names": [m.name for m in members]}  # fmt: skip
    for key, value in labels.items():
        if study.user_attrs.get(key) != value:
            retry("labelling the study", study.set_user_attr, key, value)
    context = {
        "study_name": name,
        "method": method,
        "objective_kind": "relative",
        "flow_run_id": str(get_run_context().flow_run.id),
    }
    record = recorder(settings, by_pid, context)
    timeline: list[tuple] = []

    def record_run(run: RunOutcome) -> None:
        record(run)
        timeline.append(
            (run.plan.stage, run.plan.trial_number, run.plan.repeat,
             run.result.get("started_at"), run.result.get("finished_at"))
        )  # fmt: skip

    already = retry("counting", finished_trials, study)
    progress = StudyProgress(
        create_progress_artifact(
            100.0 * min(already, n_trials) / n_trials,
            key=artifact_key("progress", "recipe", set_name, method),
            description=f"trials finished in study {name} ({len(members)} problems)",
        ),
        partial(retry, "reading the best value", best_value, study),
    )

    def on_outcome(outcome: Outcome, done: int, total: int) -> None:
        errors: dict[str, list[float]] = {}
        for run in outcome.runs:
            if run.objective is not None:
                errors.setdefault(run.plan.pid, []).append(run.objective)
        trial = {
            "trial_state": outcome.state.name.lower(),
            "trial_objective": outcome.objective,
            "trial_objective_se": family_error(errors)["se"]
            if outcome.objective is not None
            else None,
        }
        for run in outcome.runs:
            record(run, trial)
        told = outcome.objective if outcome.state.name == "COMPLETE" else None
        best = progress.trial_done(100.0 * min(done, total) / total, told)
        shown = (
            f"{outcome.objective:.4g}" if told is not None
            else outcome.reason or outcome.state.name.lower()
        )  # fmt: skip
        logger.info(
            "recipe %s %s: trial %d/%d (%d runs): mean relative error %s; best so far %s",
            set_name, method, done, total, len(outcome.runs), shown,
            "none" if best is None else f"{best:.4g}",
        )  # fmt: skip

    submit = submitter(settings, lambda plan: spec_of[plan.pid])
    first_done = stall_guard(f"study {name}", settings, budget_sec)
    driver = RecipeDriver(
        study, MethodSpace.model_validate(space), pid=name, method=method,
        budget_sec=budget_sec, llc_ref=float("nan"), se_ref=float("nan"), repeats=repeats,
        pruner=pruner, record=record_run, on_outcome=on_outcome, retry=retry,
        lease_sec=settings.budgets.lease_sec, slots=current_slots(), members=members,
    )  # fmt: skip
    try:
        outcomes = driver.run(n_trials, batch=batch, submit=submit, first_done=first_done)
    except BaseException:
        progress.close(send=False)
        raise
    progress.close()
    candidates = retry("ranking configurations", top_configurations, study, max(validate_top_k, 1))
    if candidates and validate_top_k > 0:
        fresh = study_seeds(name, validation_seeds, "validation")
        plans: list[RunPlan] = []
        for candidate in candidates:
            config = driver.space.config(candidate.hyperparams).model_dump(mode="json")
            plans += family_plans(
                config, candidate.hyperparams, method=method, members=members, seeds=fresh,
                budget_sec=budget_sec, stage="validation", trial_number=candidate.trial_number,
            )  # fmt: skip
        logger.info(
            "recipe %s %s: validating the top %d configurations on %d fresh seeds × %d "
            "problems (%d runs)",
            set_name, method, len(candidates), validation_seeds, len(members), len(plans),
        )  # fmt: skip
        run_all(
            plans, submit=submit, first_done=first_done, record=record_run,
            judge=lambda plan, result: judge_relative(plan, result, by_pid[plan.pid]),
        )  # fmt: skip
    return {
        "kind": "recipe",
        "study_name": name,
        "set_name": set_name,
        "pid": f"recipe-{set_name}",
        "problem_name": f"recipe-{set_name}",
        "method": method,
        "members": [asdict(member) for member in members],
        "trials_run_now": len(outcomes),
        "trials_finished": retry("counting", finished_trials, study),
        "counts": retry("counting", trial_counts, study),
        "candidates": [asdict(candidate) for candidate in candidates],
        "ask_submit_sec": driver.ask_submit_sec,
        "timeline": timeline,
    }


def write_recipes(
    leaderboard: list[dict[str, Any]],
    studies: list[dict[str, Any]],
    spaces: dict[str, MethodSpace],
    out_dir: Path,
    holdout: str | None,
) -> list[str]:
    """``<out_dir>/<set>-<method>.yaml`` for every recipe row with a recommendation."""
    members = {study["study_name"]: study["members"] for study in studies if "members" in study}
    paths = []
    for row in leaderboard:
        if row.get("kind") != "recipe" or row["config_id"] is None:
            continue
        config = recommended_config(row, spaces)
        set_name = row["problem_name"].removeprefix("recipe-")
        path = write_recipe(
            out_dir / f"{set_name}-{row['method']}.yaml", row, config,
            tuned_on=[m["name"] for m in members[row["study_name"]]], holdout=holdout,
        )  # fmt: skip
        get_run_logger().info("recipe: %s", path)
        paths.append(str(path))
    return paths
