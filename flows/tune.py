"""The ``tune`` flow: tune every cheap method on every problem against its HMC reference.

    python flows/tune.py                       # the default preset, end to end
    python flows/tune.py --problems smoke --methods sgld vi --n-trials 6 --dry-run

1. load the problem set and the methods' search spaces;
2. get every reference: read from disk when all are cached, else computed (cached HMC
   tasks) on the reference cluster;
3. start the trials cluster; every (problem, method) study runs at once, a
   ``tune-method`` subflow each, the trials in flight over all of them capped at the
   cluster's capacity and shared fairly; a study is an Optuna study ``<pid>:<method>``:
   each trial is ``repeats`` runs on the study's common seeds, the pruner may stop a
   losing trial between repeats, at most ``batch`` trials are in flight;
4. the same subflow validates the study's top-k configurations on fresh seeds; the one
   with the lowest validated error is the study's recommendation;
5. every finished run is a row of ``runs.parquet``; the leaderboard (validated error with
   its 95 % interval, the search objective beside it) goes to ``leaderboard.parquet`` and
   the Prefect artifacts; the plots and ``index.html`` to ``artifacts/report/``.
"""

from __future__ import annotations

import signal

if __name__ == "__main__":
    # First, before an import starts a thread (JAX, pyarrow): every thread and child
    # process inherits this mask, so only the watcher in flows/terminal.py receives a
    # Ctrl-C or SIGTERM meant for the run, never a Dask worker. multiprocessing's resource
    # tracker unblocks both signals in whichever thread first starts it (CPython 3.11),
    # so it is started before the mask is set.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    # --help and malformed arguments answer now, before Prefect, JAX and Optuna load.
    import sys as _sys

    from flows.arguments import parser as _parser

    _parser().parse_args(_sys.argv[1:])

import re
import sys
import time
from dataclasses import asdict
from functools import partial
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

from flows.campaign import all_at_once, current_slots
from flows.checks import (
    DEFAULT_REPEATS,
    DEFAULT_VALIDATE_TOP_K,
    DEFAULT_VALIDATION_SEEDS,
    StudyStalled,
    UntrustedReference,
    check_parameters,
    refuse_untrusted,
)
from flows.cluster import ClusterError, capacity, dask_cluster, runner_for
from flows.logs import forward_library_logs
from flows.records import DiskFull, run_row, trial_fields, write_rows
from flows.reference import (
    DEFAULT_REFERENCE,
    fetch_or_compute,
    reference_table,
    storage_paths,
)
from flows.report import (
    build_leaderboard,
    leaderboard_line,
    leaderboard_table,
    plots_markdown,
    report_markdown,
)
from lambda_hat.io import check_writable, read_json
from lambda_hat.problems import ProblemSpec, load_problem_set
from lambda_hat.results import compact, write_leaderboard
from lambda_hat.runners.hmc_reference import ReferenceConfig
from lambda_hat.search_space import MethodSpace, load_methods
from lambda_hat.settings import Settings
from lambda_hat.sizes import check_fits
from lambda_hat.slots import TrialSlots
from lambda_hat.storage import (
    StorageError,
    StorageRetry,
    best_value,
    check_storage,
    finished_trials,
    init_storage,
    open_study,
)
from lambda_hat.tuning import Driver, Outcome, RunOutcome, RunPlan, make_pruner
from lambda_hat.validation import run_all, top_configurations, trial_counts, validation_plans
from tasks.report import build_report_task
from tasks.runs import run_method_task

DEFAULT_METHODS = ("sgld", "mclmc", "vi")


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
    paths = storage_paths(settings)
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
    progress = create_progress_artifact(
        100.0 * min(already, n_trials) / n_trials,
        key=artifact_key("progress", spec["name"], method),
        description=f"trials finished in study {name} ({spec['name']}, {method})",
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
    task = run_method_task.with_options(
        result_storage=settings.results_dir.resolve() / "prefect-results"
    )
    runs_dir = settings.artifacts_dir.resolve() / "runs"
    timeline: list[tuple] = []

    def submit(plan: RunPlan):
        # A run whose metrics.json is missing or unreadable (truncated) is computed, not
        # taken from the cache: the files on disk must match what the study was told.
        run_dir = runs_dir / pid / method / plan.run_id
        recompute = read_json(run_dir / "metrics.json") is None
        if recompute and (run_dir / "metrics.json").exists():
            logger.warning("%s: metrics.json is unreadable; recomputing the run", run_dir)
        return task.with_options(refresh_cache=recompute).submit(
            plan.run_id, spec, method, plan.config, plan.seed, plan.budget_sec, **paths,
            stage=plan.stage,
        )  # fmt: skip

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
        update_progress_artifact(progress, 100.0 * min(done, total) / total)
        best = retry("reading the best value", best_value, study)
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
    stall_sec = max(settings.budgets.stall_sec, 2 * budget_sec)

    def first_done(futures):
        try:
            return next(as_completed(futures, timeout=stall_sec))
        except TimeoutError:
            raise StudyStalled(
                f"study {name}: no run finished within {stall_sec:g} s "
                f"(LAMBDA_HAT_BUDGETS__STALL_SEC); workers are paused (memory), lost, or "
                "not starting. The study resumes when the flow is run again."
            ) from None

    outcomes = driver.run(n_trials, batch=batch, submit=submit, first_done=first_done)
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
    repeats: int = DEFAULT_REPEATS,
    pruner: Literal["wilcoxon", "median", "none"] = "wilcoxon",
    validate_top_k: int = DEFAULT_VALIDATE_TOP_K,
    validation_seeds: int = DEFAULT_VALIDATION_SEEDS,
    allow_untrusted_references: bool = False,
) -> dict[str, Any]:
    """Tune ``methods`` on ``problems`` (a preset or YAML path): ``n_trials`` trials per
    study of ``repeats`` runs each, then the ``validate_top_k`` best configurations
    rerun on ``validation_seeds`` fresh seeds each (0 turns validation off)."""
    forward_library_logs()
    logger = get_run_logger()
    settings = Settings()
    problem_set = load_problem_set(problems)
    check_fits(problem_set, settings.memory_limit_bytes(), problems)
    spaces = load_methods(methods_file)
    check_parameters(
        methods, spaces, n_trials, batch, repeats, pruner, validate_top_k, validation_seeds,
        huber_k,
    )  # fmt: skip
    # Fail before the references are computed, not after.
    check_writable(settings.results_dir, "results_dir")
    check_writable(settings.artifacts_dir, "artifacts_dir")
    settings.results_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    check_storage(settings.storage_url())
    retry = StorageRetry(settings.budgets.storage_retry_sec)
    retry("creating the storage", init_storage, settings.storage_url())
    specs = [spec.model_dump(mode="json") for spec in problem_set.problems]
    config = ReferenceConfig(num_warmup=reference_warmup, num_draws=reference_draws)
    logger.info("settings: %s", settings.public())
    started = time.perf_counter()
    # References first, on the (larger) reference jobs, which are released before tuning;
    # when all are cached they are read from disk and no reference cluster starts.
    references = fetch_or_compute(specs, config, refresh_references, settings)
    create_table_artifact(
        key="reference-table",
        table=reference_table(references),
        description=f"HMC references for {problems}, with their quality verdicts",
    )
    if not allow_untrusted_references:
        refuse_untrusted(references)
    # Every study at once, on one cluster: the trials in flight over all of them are
    # capped at the cluster's capacity and shared fairly (lambda_hat.slots).
    with dask_cluster(settings.cluster, role="trials") as address:
        slots = TrialSlots(capacity(settings.cluster, "trials", address))
        logger.info(
            "%d studies at once; at most %d trials in flight over all of them",
            len(specs) * len(methods), slots.capacity,
        )  # fmt: skip
        subflow = tune_method.with_options(task_runner=runner_for(address))
        calls = [
            partial(
                subflow, spec, method, spaces[method].model_dump(mode="json"), reference,
                n_trials, batch, objective, huber_k, settings.budgets.trial_sec,
                repeats=repeats, pruner=pruner, validate_top_k=validate_top_k,
                validation_seeds=validation_seeds,
            )
            for spec, reference in zip(specs, references, strict=True)
            for method in methods
        ]  # fmt: skip
        studies = all_at_once(calls, slots)
    results = settings.results_dir.resolve()
    # The runs' part files into one runs.parquet (rebuilt from row.json if it is corrupt).
    compact(results / "runs.parquet", rebuild_from=settings.artifacts_dir.resolve() / "runs")
    rows = build_leaderboard(studies, references, results / "runs.parquet")
    write_leaderboard(results / "leaderboard.parquet", rows)
    create_table_artifact(
        key="leaderboard",
        table=leaderboard_table(rows),
        description="recommended configuration per study: validated error on fresh seeds "
        "(mean and 95 % interval) beside its search objective",
    )
    report = build_report_task(
        str(settings.artifacts_dir.resolve()), str(results / "runs.parquet"), rows, references,
        title=f"lambda_hat: {', '.join(methods)} on {problems}",
    )  # fmt: skip
    create_markdown_artifact(
        key="tune-report",
        markdown=report_markdown(rows, references, problems, time.perf_counter() - started)
        + plots_markdown(report),
        description=f"tuning report for {problems}: leaderboard, references, plots",
    )
    for row in rows:
        logger.info("%s", leaderboard_line(row))
    logger.info("report: %s", report)
    return {"references": references, "studies": studies, "leaderboard": rows, "report": report}


# Errors whose message says all a user needs: the terminal shows that one line (the
# traceback is in the log and the Prefect UI).
ONE_LINE_ERRORS = (StorageError, ClusterError, StudyStalled, UntrustedReference, DiskFull)


def main(argv: list[str] | None = None) -> int:
    from flows import terminal
    from flows.cli import parse_args, print_plan

    args = parse_args(argv)
    if args.dry_run:
        print_plan(args)
        return 0
    log_path = (
        Settings().results_dir.resolve() / "logs" / f"tune-{time.strftime('%Y%m%d-%H%M%S')}.log"
    )
    terminal.watch_interrupts(log_path)
    try:
        with terminal.prefect_api():
            terminal.quiet_console(log_path, ONE_LINE_ERRORS)
            result = tune(
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
                repeats=args.repeats,
                pruner=args.pruner,
                validate_top_k=args.validate_top_k,
                validation_seeds=args.validation_seeds,
                allow_untrusted_references=args.allow_untrusted_references,
            )
    except (*ONE_LINE_ERRORS, terminal.ServerError) as error:
        if terminal.interrupted():
            return 128 + terminal.received_signal()
        # The traceback is in the flow's logs; the terminal gets the reason in one line.
        print(f"error: {error}", file=sys.stderr)
        return 1
    except BaseException:
        # Interrupted: the watcher has printed the one line. The KeyboardInterrupt may
        # surface wrapped in whatever it cut short (a serialization, a Dask call).
        if terminal.interrupted():
            return 128 + terminal.received_signal()
        raise
    print(f"report: {result['report']}  (log: {log_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
