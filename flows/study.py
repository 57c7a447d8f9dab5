"""The ``tune-study`` subflow: one Optuna study of one method, from its first trial to its
validated recommendation. A per-problem study (``<pid>:<method>``) and a recipe study
(``recipe-<set>:<method>``, one configuration across every problem of a set) are the same
flow over a family of one problem or of many; ``lambda_hat.tuning.kinds`` says what
differs (how a run is judged, what the pruner sees, what a trial is told).

1. open (or resume) the study and label it for the dashboard;
2. run trials until it has ``n_trials`` finished: each trial is ``repeats`` runs on each
   problem on the study's common seeds, the pruner may stop a losing trial between steps
   (repeats, or problems for a recipe), at most ``batch`` trials are in flight (and no
   more than the campaign's share of the cluster);
3. validate the top-k configurations on fresh seeds on every problem; every run is a row
   of ``runs.parquet`` (its own problem's pid and reference) as soon as it finishes.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal

import optuna
import prefect.runtime
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
from flows.progress import StudyProgress, describe
from flows.records import recorder, trial_fields
from flows.reference import storage_paths
from lambda_hat.io import read_json
from lambda_hat.settings import Settings
from lambda_hat.tuning.driver import Driver
from lambda_hat.tuning.kinds import Member, StudyKind, member_of, members_of, study_kind
from lambda_hat.tuning.pinning import pin_references, pin_units
from lambda_hat.tuning.pruning import make_pruner
from lambda_hat.tuning.search_space import MethodSpace
from lambda_hat.tuning.storage import StorageRetry, best_value, finished_trials, open_study
from lambda_hat.tuning.trials import Outcome, RunOutcome, RunPlan
from lambda_hat.tuning.validation import (
    Candidate,
    StudyResult,
    judged_rows,
    leaderboard_row,
    run_all,
    run_groups,
    top_configurations,
    trial_counts,
    validation_plans,
)
from lambda_hat.tuning.warm_start import WarmStart
from tasks.runs import run_group_task, run_method_task

# The search objective's name in Optuna (the dashboard's axis and column).
OBJECTIVE_NAME = "|llc_hat - llc_ref| (search objective)"


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes.

    >>> artifact_key("progress", "dln_4_4.3", "sgld")
    'progress-dln-4-4-3-sgld'
    """
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower())


def _describe(outcome: Outcome, kind: StudyKind) -> str:
    runs = len(outcome.runs)
    if outcome.state.name == "PRUNED":
        return f"pruned after {runs} runs"
    if outcome.objective is None:
        return f"failed: {outcome.reason}"
    what = "mean relative error" if kind.name == "recipe" else "objective"
    return f"{what} {outcome.objective:.4g} over {runs} runs"


def _label_study(study, labels: dict[str, Any]) -> None:
    """What optuna-dashboard shows beside the study: which problems, which references,
    and what its objective is."""
    for key, value in labels.items():
        if study.user_attrs.get(key) != value:
            study.set_user_attr(key, value)
    if study.metric_names != [OBJECTIVE_NAME]:
        with warnings.catch_warnings():  # (experimental since Optuna 3.2, stable in use)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE_NAME])


def _store_validation(study, row: dict[str, Any]) -> None:
    """The recommendation and its validated error as study attributes, so that the
    dashboard shows them beside its "best" (the search objective, biased low)."""
    validated = {
        "config_id": row.get("config_id"),
        "trial": row.get("search_trial_number"),
        "params": json.loads(row["params_json"]) if row.get("params_json") else None,
        "mean": row.get("validated_error_mean"),
        "ci95": [row.get("validated_error_ci_low"), row.get("validated_error_ci_high")],
        "rel_mean": row.get("validated_rel_error_mean"),
        "bias": row.get("validated_bias"),
        "n_runs": row.get("n_validation_runs"),
    }
    study.set_user_attr("recommended", validated)


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
        run_dir = runs_dir / plan.pid / plan.method / plan.run_id
        recompute = not _finished(runs_dir, plan)
        if recompute and (run_dir / "metrics.json").exists():
            logger.warning("%s: metrics.json is unreadable; recomputing the run", run_dir)
        return task.with_options(refresh_cache=recompute).submit(
            plan.run_id, spec, plan.method, plan.config, plan.seed, plan.budget_sec, **paths,
            stage=plan.stage,
        )  # fmt: skip

    return submit


def group_submitter(settings: Settings, spec_of: Callable[[RunPlan], dict[str, Any]]):
    """``submit_group(plans) -> future``: runs of one configuration on one problem as one
    cached task on the flow's runner (``run_group_task``); its result is one per plan."""
    paths = storage_paths(settings)
    task = run_group_task.with_options(
        result_storage=settings.results_dir.resolve() / "prefect-results"
    )

    def submit_group(plans: list[RunPlan]):
        first = plans[0]
        runs = [{"run_id": plan.run_id, "seed": plan.seed} for plan in plans]
        # A group whose run files are not all readable is recomputed, not taken from the
        # cache (the task itself reuses the runs that did finish): as ``submitter`` does.
        runs_dir = settings.artifacts_dir.resolve() / "runs"
        recompute = not all(_finished(runs_dir, plan) for plan in plans)
        return task.with_options(refresh_cache=recompute).submit(
            runs, spec_of(first), first.method, first.config, first.budget_sec, **paths,
            stage=first.stage, group_size=len(plans),
        )  # fmt: skip

    return submit_group


def _finished(runs_dir: Path, plan: RunPlan) -> bool:
    """Whether the plan's run left a readable metrics.json."""
    return read_json(runs_dir / plan.pid / plan.method / plan.run_id / "metrics.json") is not None


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


def _study_run_name() -> str:
    """``tune-<method>-<problem>`` or ``recipe-<method>-<set>``: the flow run's name."""
    parameters = prefect.runtime.flow_run.parameters
    if parameters.get("kind") == "recipe":
        return f"recipe-{parameters['method']}-{parameters['set_name']}"
    return f"tune-{parameters['method']}-{parameters['specs'][0]['name']}"


@flow(name="tune-study", flow_run_name=_study_run_name)
def tune_study(
    specs: list[dict[str, Any]],
    references: list[dict[str, Any]],
    method: str,
    space: dict[str, Any],
    n_trials: int,
    batch: int,
    budget_sec: float,
    kind: Literal["problem", "recipe"] = "problem",
    set_name: str | None = None,
    objective: Literal["abs", "huber"] = "abs",
    huber_k: float = 1.0,
    repeats: int = DEFAULT_REPEATS,
    pruner: Literal["wilcoxon", "median", "none"] = "wilcoxon",
    sampler: Literal["tpe", "qmc-tpe", "random"] = "tpe",
    stop_at_noise_floor: bool = False,
    validate_top_k: int = DEFAULT_VALIDATE_TOP_K,
    validation_seeds: int = DEFAULT_VALIDATION_SEEDS,
    warm_start: dict[str, Any] | None = None,
) -> StudyResult:
    """One Optuna study of ``method`` over ``specs`` (their ``references`` in the same
    order; one problem, or a recipe's set ``set_name``), resumed if it exists, run until
    it has ``n_trials`` finished, then its top-k configurations validated on fresh seeds
    on every problem. If no run finishes for ``stall_sec``, the subflow fails and says so.
    ``warm_start``: a new study's first trial (``lambda_hat.tuning.warm_start``)."""
    settings = Settings()
    retry = StorageRetry(settings.budgets.storage_retry_sec)
    study_as = study_kind(kind, objective=objective, huber_k=huber_k, set_name=set_name)
    members = members_of(specs, references)

    # 1. The study, labelled for the dashboard, and its progress bar.
    study = retry(
        "opening the study", open_study, settings.storage_url(),
        study_as.study_name(members, method), make_pruner(pruner), sampler,
    )  # fmt: skip
    retry("labelling the study", _label_study, study, study_as.dashboard_labels(members, method))
    # Its trials and these runs against the same references (or refused in one line).
    retry("checking the study's references", pin_references, study, members)
    retry("checking the study's units", pin_units, study, MethodSpace.model_validate(space))
    log = StudyLog(settings, study, retry, study_as, members, method, n_trials, validate_top_k)

    # 2. The search: trials of runs on the study's common seeds, told as they finish.
    spec_of = {member.pid: spec for member, spec in zip(members, specs, strict=True)}
    submit = submitter(settings, lambda plan: spec_of[plan.pid])
    first_done = stall_guard(f"study {study.study_name}", settings, budget_sec)
    driver = Driver(
        study, MethodSpace.model_validate(space), method=method, members=members,
        budget_sec=budget_sec, kind=study_as, repeats=repeats, pruner=pruner,
        record=log.record_run, on_outcome=log.trial_told, retry=retry,
        lease_sec=settings.budgets.lease_sec, slots=current_slots(),
        warm_start=WarmStart(**warm_start) if warm_start else None, sampler=sampler,
        stop_at_noise_floor=stop_at_noise_floor,
    )  # fmt: skip
    with log.progress_open():
        outcomes = driver.run(n_trials, batch=batch, submit=submit, first_done=first_done)
    log.latency(driver.ask_submit_sec)

    # 3. Validation: the top-k configurations on fresh seeds. With validation off the best
    # search configuration is still the study's answer (shown as not validated).
    candidates, validated = _validate(
        settings, study, driver.space, study_as, members, spec_of, log, retry,
        top_k=validate_top_k, seeds=validation_seeds, budget_sec=budget_sec,
    )  # fmt: skip

    # 4. What the campaign gets back: the leaderboard row from the runs in hand (its
    # validated figures also stored on the study, for the dashboard).
    counts = retry("counting", trial_counts, study)
    row = leaderboard_row(
        study_name=study.study_name, method=method, kind=study_as, members=members,
        candidates=candidates, validation_rows=judged_rows(validated, members), counts=counts,
    )  # fmt: skip
    retry("storing the validated error", _store_validation, study, row)
    return StudyResult(
        study_name=study.study_name,
        kind=study_as.name,
        method=method,
        pid=study_as.pid(members),
        problem_name=study_as.label(members),
        members=members,
        candidates=candidates,
        counts=counts,
        trials_run_now=len(outcomes),
        trials_finished=retry("counting", finished_trials, study),
        leaderboard_row=row,
        ask_submit_sec=driver.ask_submit_sec,
        timeline=log.timeline,
    )


def _validate(
    settings: Settings,
    study: optuna.Study,
    space: MethodSpace,
    study_as: StudyKind,
    members: list[Member],
    spec_of: dict[str, dict[str, Any]],
    log: StudyLog,
    retry: StorageRetry,
    *,
    top_k: int,
    seeds: int,
    budget_sec: float,
) -> tuple[list[Candidate], list[RunOutcome]]:
    """The study's top-k configurations (at least its best one) and their runs on fresh
    seeds on every problem; no runs with validation off (``top_k`` 0)."""
    candidates = retry("ranking configurations", top_configurations, study, max(top_k, 1))
    if not candidates or top_k == 0:
        return candidates, []
    plans = validation_plans(
        candidates, space, study_name=study.study_name, pids=list(spec_of),
        method=log.method, seeds=seeds, budget_sec=budget_sec,
    )  # fmt: skip
    log.validating(len(candidates), seeds, len(plans))
    # A group runs its runs one after the other: its stall bound is theirs together.
    longest = max(len(group) for group in run_groups(plans))
    validated = run_all(
        plans, submit_group=group_submitter(settings, lambda plan: spec_of[plan.pid]),
        first_done=stall_guard(f"validating {study.study_name}", settings, budget_sec * longest),
        record=log.record_run,
        judge=lambda plan, result: study_as.judge(plan, result, member_of(members, plan.pid)),
    )  # fmt: skip
    return candidates, validated


class StudyLog:
    """What a study shows and writes as it goes: each run's row, each told trial's figures
    on its runs' rows, the progress artifact, and the log lines."""

    def __init__(self, settings: Settings, study, retry, kind: StudyKind, members: list[Member],
                 method: str, n_trials: int, validate_top_k: int):  # fmt: skip
        self.logger = get_run_logger()
        self.kind, self.members, self.method = kind, members, method
        self.label, self.name = kind.label(members), study.study_name
        self.timeline: list[tuple] = []
        self.record = recorder(
            settings,
            members,
            {
                "study_name": self.name,
                "method": method,
                "objective_kind": kind.objective_kind,
                "flow_run_id": str(get_run_context().flow_run.id),
            },
        )
        already = retry("counting", finished_trials, study)
        if already >= n_trials:
            self.logger.info(
                "%s %s: the study already has %d finished trials (n_trials %d): no new trial%s",
                self.label, method, already, n_trials,
                "; validating its best configurations" if validate_top_k else "",
            )  # fmt: skip
        problems = f"{len(members)} problem{'s' if len(members) > 1 else ''}"
        read_best = partial(retry, "reading the best value", best_value, study)
        what = f"study {self.name}: {self.label}, {method}, {problems}"
        self.progress = StudyProgress(
            create_progress_artifact(
                100.0 * min(already, n_trials) / n_trials,
                key=artifact_key("progress", self.label, method),
                description=describe(min(already, n_trials), n_trials, None, what),
            ),
            read_best, what=what,
        )  # fmt: skip

    def record_run(self, run: RunOutcome) -> None:
        self.record(run)
        self.timeline.append(
            (run.plan.stage, run.plan.trial_number, run.plan.repeat,
             run.result.get("started_at"), run.result.get("finished_at"))
        )  # fmt: skip

    def trial_told(self, outcome: Outcome, done: int, total: int) -> None:
        # The trial's figures go onto each of its runs' rows (rewritten, same run ids).
        self.record(*outcome.runs, extra=trial_fields(outcome, self.kind, self.members))
        told = outcome.objective if outcome.state.name == "COMPLETE" else None
        best = self.progress.trial_done(done, total, told)
        # "trial N" is Optuna's trial number, as the dashboard, report and tables show it.
        self.logger.info(
            "%s %s: trial %d (%d of %d finished) %s; best so far %s",
            self.label, self.method, outcome.number, done, total, _describe(outcome, self.kind),
            "none" if best is None else f"{best:.4g}",
        )  # fmt: skip

    @contextmanager
    def progress_open(self):
        """The progress bar while the search runs (sent a last time unless it failed)."""
        try:
            yield
        except BaseException:
            self.progress.close(send=False)
            raise
        self.progress.close()

    def latency(self, ask_submit_sec: list[float]) -> None:
        latency = sorted(ask_submit_sec) or [0.0]
        self.logger.info(
            "%s: ask→submit latency median %.3f s, max %.3f s over %d trials",
            self.name, latency[len(latency) // 2], latency[-1], len(ask_submit_sec),
        )  # fmt: skip

    def validating(self, candidates: int, seeds: int, runs: int) -> None:
        self.logger.info(
            "%s %s: validating the top %d configurations on %d fresh seeds × %d problems "
            "(%d runs)",
            self.label, self.method, candidates, seeds, len(self.members), runs,
        )  # fmt: skip
