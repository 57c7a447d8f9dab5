"""The ``tune-method`` subflow: one (problem, method) study, from its first trial to its
validated recommendation.

1. open (or resume) the Optuna study ``<pid>:<method>`` and label it for the dashboard;
2. run trials until it has ``n_trials`` finished: each trial is ``repeats`` runs on the
   study's common seeds, the pruner may stop a losing trial between repeats, at most
   ``batch`` trials are in flight (and no more than the campaign's share of the cluster);
3. validate the top-k configurations on fresh seeds; every run is a row of
   ``runs.parquet`` as soon as it finishes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.context import get_run_context
from prefect.futures import as_completed

from flows.campaign import current_slots
from flows.checks import (
    DEFAULT_REPEATS,
    DEFAULT_VALIDATE_TOP_K,
    DEFAULT_VALIDATION_SEEDS,
    StudyStalled,
)
from flows.progress import StudyProgress
from flows.records import run_row, trial_fields, write_rows
from flows.reference import storage_paths
from lambda_hat.io import read_json
from lambda_hat.problems import ProblemSpec
from lambda_hat.search_space import MethodSpace
from lambda_hat.settings import Settings
from lambda_hat.storage import StorageRetry, best_value, finished_trials, open_study
from lambda_hat.tuning import Driver, Outcome, RunOutcome, RunPlan, make_pruner
from lambda_hat.validation import run_all, top_configurations, trial_counts, validation_plans
from tasks.runs import run_method_task


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes.

    >>> artifact_key("progress", "dln_4_4.3", "sgld")
    'progress-dln-4-4-3-sgld'
    """
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())


def _describe(outcome: Outcome) -> str:
    runs = len(outcome.runs)
    if outcome.state.name == "PRUNED":
        return f"pruned after {runs} repeats"
    if outcome.objective is None:
        return f"failed: {outcome.reason}"
    return f"objective {outcome.objective:.4g} over {runs} repeats"


def _label_study(study, spec: dict[str, Any], method: str, reference: dict[str, Any]) -> None:
    """What optuna-dashboard shows beside the study: which problem, which reference."""
    labels = {
        "problem_name": spec["name"],
        "pid": reference["pid"],
        "method": method,
        "llc_ref": reference["llc_ref"],
        "se_ref": reference["se_ref"],
        "lambda_theory": reference.get("lambda_theory"),
    }
    for key, value in labels.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)


def submitter(settings: Settings, spec_of: Callable[[RunPlan], dict[str, Any]]):
    """``submit(plan) -> future``: the plan's run as a cached task on the flow's runner.
    A run whose metrics.json is missing or unreadable (truncated) is computed, not taken
    from the cache: the files on disk must match what the study was told."""
    logger = get_run_logger()
    paths = storage_paths(settings)
    runs_dir = settings.artifacts_dir.resolve() / "runs"
    task = run_method_task.with_options(
        result_storage=settings.results_dir.resolve() / "prefect-results"
    )

    def submit(plan: RunPlan):
        spec = spec_of(plan)
        pid = plan.pid or ProblemSpec.model_validate(spec).pid
        run_dir = runs_dir / pid / plan.method / plan.run_id
        recompute = read_json(run_dir / "metrics.json") is None
        if recompute and (run_dir / "metrics.json").exists():
            logger.warning("%s: metrics.json is unreadable; recomputing the run", run_dir)
        return task.with_options(refresh_cache=recompute).submit(
            plan.run_id, spec, plan.method, plan.config, plan.seed, plan.budget_sec, **paths,
            stage=plan.stage,
        )  # fmt: skip

    return submit


def stall_guard(what: str, settings: Settings, budget_sec: float):
    """``first_done(futures)``: the first to finish, or ``StudyStalled`` when none does
    within ``stall_sec`` (at least two run budgets)."""
    stall_sec = max(settings.budgets.stall_sec, 2 * budget_sec)

    def first_done(futures):
        try:
            return next(as_completed(futures, timeout=stall_sec))
        except TimeoutError:
            raise StudyStalled(
                f"{what}: no run finished within {stall_sec:g} s "
                f"(LAMBDA_HAT_BUDGETS__STALL_SEC); workers are paused (memory), lost, or "
                "not starting. The study resumes when the flow is run again."
            ) from None

    return first_done


@flow(name="tune-method", flow_run_name="tune-{method}-{spec[name]}")
def tune_method(
    spec: dict[str, Any],
    method: str,
    space: dict[str, Any],
    reference: dict[str, Any],
    n_trials: int,
    batch: int,
    objective: Literal["abs", "huber"],
    huber_k: float,
    budget_sec: float,
    repeats: int = DEFAULT_REPEATS,
    pruner: Literal["wilcoxon", "median", "none"] = "wilcoxon",
    validate_top_k: int = DEFAULT_VALIDATE_TOP_K,
    validation_seeds: int = DEFAULT_VALIDATION_SEEDS,
) -> dict[str, Any]:
    """One Optuna study, resumed if it exists, run until it has ``n_trials`` finished, then
    its top-k configurations validated on fresh seeds. If no run finishes for
    ``stall_sec``, the subflow fails and says so."""
    logger = get_run_logger()
    settings = Settings()
    pid = ProblemSpec.model_validate(spec).pid
    retry = StorageRetry(settings.budgets.storage_retry_sec)
    name = f"{pid}:{method}"
    study = retry(
        "opening the study", open_study, settings.storage_url(), name, 0, make_pruner(pruner)
    )
    retry("labelling the study", _label_study, study, spec, method, reference)
    already = retry("counting", finished_trials, study)
    if already >= n_trials:
        logger.info(
            "%s %s: the study already has %d finished trials (n_trials %d): no new trial%s",
            spec["name"], method, already, n_trials,
            "; validating its best configurations" if validate_top_k else "",
        )  # fmt: skip
    progress = StudyProgress(
        create_progress_artifact(
            100.0 * min(already, n_trials) / n_trials,
            key=artifact_key("progress", spec["name"], method),
            description=f"trials finished in study {name} ({spec['name']}, {method})",
        ),
        partial(retry, "reading the best value", best_value, study),
    )
    context = {
        "study_name": name,
        "pid": pid,
        "problem_name": spec["name"],
        "method": method,
        "objective_kind": objective,
        "llc_ref": reference["llc_ref"],
        "se_ref": reference["se_ref"],
        "flow_run_id": str(get_run_context().flow_run.id),
    }
    parquet = settings.results_dir.resolve() / "runs.parquet"
    runs_dir = settings.artifacts_dir.resolve() / "runs"
    timeline: list[tuple] = []
    submit = submitter(settings, lambda plan: spec)

    def record(run: RunOutcome) -> None:
        write_rows([run_row(run, context)], parquet, runs_dir)
        timeline.append(
            (run.plan.stage, run.plan.trial_number, run.plan.repeat,
             run.result.get("started_at"), run.result.get("finished_at"))
        )  # fmt: skip

    def on_outcome(outcome: Outcome, done: int, total: int) -> None:
        # The trial's figures go onto each of its runs' rows (rewritten, same run ids).
        trial = trial_fields(outcome, reference["llc_ref"])
        write_rows([{**run_row(run, context), **trial} for run in outcome.runs], parquet, runs_dir)
        told = outcome.objective if outcome.state.name == "COMPLETE" else None
        best = progress.trial_done(100.0 * min(done, total) / total, told)
        logger.info(
            "%s %s: trial %d/%d %s; best so far %s",
            spec["name"], method, done, total, _describe(outcome),
            "none" if best is None else f"{best:.4g}",
        )  # fmt: skip

    driver = Driver(
        study,
        MethodSpace.model_validate(space),
        pid=pid,
        method=method,
        budget_sec=budget_sec,
        llc_ref=reference["llc_ref"],
        se_ref=reference["se_ref"],
        objective=objective,
        huber_k=huber_k,
        repeats=repeats,
        pruner=pruner,
        record=record,
        on_outcome=on_outcome,
        retry=retry,
        lease_sec=settings.budgets.lease_sec,
        slots=current_slots(),
    )
    first_done = stall_guard(f"study {name}", settings, budget_sec)

    try:
        outcomes = driver.run(n_trials, batch=batch, submit=submit, first_done=first_done)
    except BaseException:
        progress.close(send=False)
        raise
    progress.close()
    latency = sorted(driver.ask_submit_sec) or [0.0]
    logger.info(
        "%s: ask→submit latency median %.3f s, max %.3f s over %d trials",
        name, latency[len(latency) // 2], latency[-1], len(driver.ask_submit_sec),
    )  # fmt: skip
    # With validation off the best search configuration is still the study's answer (the
    # leaderboard shows it as not validated).
    ranked = max(validate_top_k, 1)
    candidates = retry("ranking configurations", top_configurations, study, ranked)
    if candidates and validate_top_k > 0:
        plans = validation_plans(
            candidates,
            driver.space,
            study_name=name,
            pid=pid,
            method=method,
            seeds=validation_seeds,
            budget_sec=budget_sec,
        )
        logger.info(
            "%s %s: validating the top %d configurations on %d fresh seeds each (%d runs)",
            spec["name"], method, len(candidates), validation_seeds, len(plans),
        )  # fmt: skip
        run_all(
            plans,
            submit=submit,
            first_done=first_done,
            llc_ref=reference["llc_ref"],
            se_ref=reference["se_ref"],
            record=record,
        )
    return {
        "study_name": name,
        "pid": pid,
        "problem_name": spec["name"],
        "method": method,
        "trials_run_now": len(outcomes),
        "trials_finished": retry("counting", finished_trials, study),
        "counts": retry("counting", trial_counts, study),
        "candidates": [asdict(candidate) for candidate in candidates],
        "ask_submit_sec": driver.ask_submit_sec,
        "timeline": timeline,
    }
