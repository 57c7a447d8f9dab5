"""The ``tune`` flow: tune every cheap method on every problem against its HMC reference.

    python flows/tune.py                       # the default preset, end to end
    python flows/tune.py --problems smoke --methods sgld vi --n-trials 6 --dry-run

1. load the problem set and the methods' search spaces;
2. start the Dask cluster from the settings;
3. make sure every reference exists (cached HMC tasks);
4. for each (problem, method), a ``tune-method`` subflow runs an Optuna study
   ``<pid>:<method>``, keeping ``batch`` trials in flight and telling each result as it
   arrives; every finished trial becomes a row of ``runs.parquet``;
5. publish the leaderboard and a report as artifacts.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import get_run_context
from prefect.futures import as_completed

from flows.cluster import ClusterError, dask_cluster, runner_for
from flows.logs import forward_library_logs
from flows.reference import DEFAULT_REFERENCE, compute_references, storage_paths
from flows.report import leaderboard_rows, report_markdown
from lambda_hat.io import atomic_write_json, check_writable, read_json
from lambda_hat.problems import ProblemSpec, load_problem_set
from lambda_hat.results import append_rows
from lambda_hat.runners.hmc_reference import ReferenceConfig
from lambda_hat.search_space import MethodSpace, load_methods
from lambda_hat.settings import Settings
from lambda_hat.tuning import (
    Driver,
    Outcome,
    StorageError,
    StorageRetry,
    TrialPlan,
    best_value,
    check_storage,
    finished_trials,
    open_study,
)
from tasks.trials import run_trial_task

DEFAULT_METHODS = ("sgld", "mclmc", "vi")


class StudyStalled(RuntimeError):
    """No trial finished within the stall timeout. One line."""


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return "-".join(parts).lower().replace("_", "-").replace(":", "-")


def _row(outcome: Outcome, context: dict[str, Any]) -> dict[str, Any]:
    result, plan = outcome.result, outcome.plan
    llc = result.get("llc_hat")
    error = None if llc is None else abs(llc - context["llc_ref"])
    return {
        **result,
        **context,
        "trial_id": plan.trial_id,
        "trial_number": plan.number,
        "status": result.get("status"),
        "error": outcome.reason or result.get("error"),
        "objective": outcome.objective,
        "abs_error": error,
        "rel_error": None if error is None else error / abs(context["llc_ref"]),
        "hyperparams": plan.hyperparams,
        "seed": plan.seed,
        "budget_sec": plan.budget_sec,
    }


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
) -> dict[str, Any]:
    """One Optuna study, resumed if it exists, run until it has ``n_trials`` finished.
    If no trial finishes for ``stall_sec``, the subflow fails and says so."""
    logger = get_run_logger()
    settings = Settings()
    paths = storage_paths(settings)
    pid = ProblemSpec.model_validate(spec).pid
    retry = StorageRetry(settings.budgets.storage_retry_sec)
    study = retry("opening the study", open_study, settings.storage_url(), f"{pid}:{method}")
    progress = create_progress_artifact(
        100.0 * min(retry("counting", finished_trials, study), n_trials) / n_trials,
        key=artifact_key("progress", pid, method),
        description=f"trials finished in study {study.study_name}",
    )
    context = {
        "study_name": study.study_name,
        "pid": pid,
        "problem_name": spec["name"],
        "method": method,
        "objective_kind": objective,
        "llc_ref": reference["llc_ref"],
        "se_ref": reference["se_ref"],
        "flow_run_id": str(get_run_context().flow_run.id),
    }
    parquet = settings.results_dir.resolve() / "runs.parquet"
    trial_task = run_trial_task.with_options(
        result_storage=settings.results_dir.resolve() / "prefect-results"
    )

    runs_dir = settings.artifacts_dir.resolve() / "runs"

    def submit(plan: TrialPlan):
        # A trial whose metrics.json is missing or unreadable (truncated) is computed, not
        # taken from the cache: the files on disk must match what the study was told.
        trial_dir = runs_dir / pid / method / plan.trial_id
        recompute = read_json(trial_dir / "metrics.json") is None
        if recompute and (trial_dir / "metrics.json").exists():
            logger.warning("%s: metrics.json is unreadable; recomputing the trial", trial_dir)
        task = trial_task.with_options(refresh_cache=recompute)
        return task.submit(
            plan.trial_id, spec, method, plan.config, plan.seed, plan.budget_sec, **paths
        )

    def record(outcome: Outcome) -> None:
        row = _row(outcome, context)
        atomic_write_json(runs_dir / pid / method / outcome.plan.trial_id / "row.json", row)
        append_rows(parquet, [row], rebuild_from=runs_dir)

    def on_outcome(outcome: Outcome, done: int, total: int) -> None:
        update_progress_artifact(progress, 100.0 * min(done, total) / total)
        best = retry("reading the best value", best_value, study)
        shown = (
            "failed: " + str(outcome.reason)
            if outcome.objective is None
            else (f"objective {outcome.objective:.4g}")
        )
        logger.info(
            "%s %s: trial %d/%d %s; best so far %s",
            spec["name"],
            method,
            done,
            total,
            shown,
            "none" if best is None else f"{best:.4g}",
        )

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
        record=record,
        on_outcome=on_outcome,
        retry=retry,
    )
    stall_sec = max(settings.budgets.stall_sec, 2 * budget_sec)

    def first_done(futures):
        try:
            return next(as_completed(futures, timeout=stall_sec))
        except TimeoutError:
            raise StudyStalled(
                f"study {study.study_name}: no trial finished within {stall_sec:g} s "
                f"(LAMBDA_HAT_BUDGETS__STALL_SEC); workers are paused (memory), lost, or "
                "not starting. The study resumes when the flow is run again."
            ) from None

    outcomes = driver.run(n_trials, batch=batch, submit=submit, first_done=first_done)
    latency = sorted(driver.ask_submit_sec) or [0.0]
    logger.info(
        "%s: ask→submit latency median %.3f s, max %.3f s over %d trials",
        study.study_name,
        latency[len(latency) // 2],
        latency[-1],
        len(driver.ask_submit_sec),
    )
    return {
        "study_name": study.study_name,
        "trials_run_now": len(outcomes),
        "trials_finished": retry("counting", finished_trials, study),
        "ask_submit_sec": driver.ask_submit_sec,
        "timeline": [
            (o.plan.number, o.result.get("started_at"), o.result.get("finished_at"))
            for o in outcomes
        ],
    }


def check_parameters(methods: list[str], spaces: dict, n_trials: int, batch: int) -> None:
    """Deployment runs get their parameters from the UI: refuse bad ones in one line."""
    unknown = sorted(set(methods) - set(spaces))
    if unknown or not methods:
        raise ValueError(f"methods: unknown {unknown} (allowed: {', '.join(spaces)})")
    if n_trials < 1 or batch < 1:
        raise ValueError(f"n_trials and batch must be >= 1, got {n_trials} and {batch}")


@flow(name="tune", log_prints=True)
def tune(
    problems: str = "default",
    methods: list[str] = list(DEFAULT_METHODS),  # noqa: B006 - Prefect shows it in the form
    n_trials: int = 8,
    batch: int = 2,
    objective: Literal["abs", "huber"] = "abs",
    huber_k: float = 1.0,
    refresh_references: bool = False,
    methods_file: str | None = None,
    reference_warmup: int = DEFAULT_REFERENCE.num_warmup,
    reference_draws: int = DEFAULT_REFERENCE.num_draws,
) -> dict[str, Any]:
    """Tune ``methods`` on ``problems`` (a preset or YAML path) with ``n_trials`` per study."""
    forward_library_logs()
    logger = get_run_logger()
    settings = Settings()
    problem_set = load_problem_set(problems)
    spaces = load_methods(methods_file)
    check_parameters(methods, spaces, n_trials, batch)
    # Fail before the references are computed, not after.
    check_writable(settings.results_dir, "results_dir")
    check_writable(settings.artifacts_dir, "artifacts_dir")
    settings.results_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    check_storage(settings.storage_url())
    specs = [spec.model_dump(mode="json") for spec in problem_set.problems]
    config = ReferenceConfig(num_warmup=reference_warmup, num_draws=reference_draws)
    logger.info("settings: %s", settings.public())
    started = time.perf_counter()
    # References first, on the (larger) reference jobs, which are released before tuning.
    with dask_cluster(settings.cluster, role="reference") as address:
        references = compute_references.with_options(task_runner=runner_for(address))(
            specs,
            config.model_dump(mode="json"),
            refresh=refresh_references,
            budget_sec=settings.budgets.reference_sec,
        )
    studies = []
    with dask_cluster(settings.cluster, role="trials") as address:
        for spec, reference in zip(specs, references, strict=True):
            for method in methods:
                subflow = tune_method.with_options(task_runner=runner_for(address))
                summary = subflow(
                    spec,
                    method,
                    spaces[method].model_dump(mode="json"),
                    reference,
                    n_trials,
                    batch,
                    objective,
                    huber_k,
                    settings.budgets.trial_sec,
                )
                studies.append(summary)
    retry = StorageRetry(settings.budgets.storage_retry_sec)
    rows = retry(
        "building the leaderboard", leaderboard_rows, settings.storage_url(), references, methods
    )
    create_table_artifact(key="leaderboard", table=rows, description="best trial per study")
    create_markdown_artifact(
        key="tune-report",
        markdown=report_markdown(rows, references, problems, time.perf_counter() - started),
        description="tuning report",
    )
    return {"references": references, "studies": studies, "leaderboard": rows}


def main(argv: list[str] | None = None) -> int:
    from flows.cli import parse_args, print_plan

    args = parse_args(argv)
    if args.dry_run:
        print_plan(args)
        return 0
    try:
        tune(
            problems=args.problems,
            methods=args.methods,
            n_trials=args.n_trials,
            batch=args.batch,
            objective=args.objective,
            huber_k=args.huber_k,
            refresh_references=args.refresh_references,
            methods_file=args.methods_file,
            reference_warmup=args.reference_warmup,
            reference_draws=args.reference_draws,
        )
    except (StorageError, ClusterError, StudyStalled) as error:
        # The traceback is in the flow's logs; the terminal gets the reason in one line.
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
