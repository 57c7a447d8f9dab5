"""The ``tune`` flow: tune every cheap method on every problem against its HMC reference.

    python flows/tune.py                       # the default preset, end to end
    python flows/tune.py --problems smoke --methods sgld vi --n-trials 6 --dry-run
    python flows/tune.py --problems dln-family --recipe --holdout dln-family-holdout

1. load and check the problem set, the methods' search spaces and the settings;
2. start the trials cluster; each problem's reference is read from disk when cached, else
   computed (a cached HMC task) on the reference cluster or, where the profile's two
   roles are alike, on the trials' cluster (``flows/supply.py``);
3. each problem's studies start as soon as its own reference is in: every (problem,
   method) study runs at once, a ``tune-study`` subflow each (``flows/study.py``), the
   runs in flight over all of them capped at twice the cluster's capacity and shared
   fairly; a study is the Optuna study ``<pid>:<method>``: each trial is ``repeats`` runs
   on the study's common seeds, the pruner may stop a losing trial between repeats, at
   most ``batch`` trials are in flight; then its top-k configurations are validated on
   fresh seeds and the one with the lowest validated error is its recommendation;
   with ``--recipe``, one ``tune-study`` subflow per method over all the problems
   instead (a recipe study, ``recipe-<set>:<method>``), once all their references are in;
4. with ``--holdout``, every recommendation is run on the held-out problems on fresh seeds
   (``flows/transfer.py``), their references computed beside the studies;
5. every finished run is a row of ``runs.parquet``; the leaderboard (validated error with
   its 95 % interval, the search objective and the transfer error beside it) goes to
   ``leaderboard.parquet`` and the Prefect artifacts; the plots and ``index.html`` to
   ``artifacts/report/``, each recipe to ``artifacts/recipes/<set>-<method>.yaml``.
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
    # --help, bad arguments, bad problem or methods files, settings, sizes and the storage
    # answer now, and a dry run prints its plan, before Prefect, JAX and matplotlib load.
    import sys as _sys

    from flows.cli import parse_args as _parse_args
    from flows.cli import print_plan as _print_plan

    _CHECKED = _parse_args(_sys.argv[1:])
    if _CHECKED.dry_run:
        _print_plan(_CHECKED)
        _sys.exit(0)

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact

from flows.checks import (
    DEFAULT_REPEATS,
    DEFAULT_VALIDATE_TOP_K,
    DEFAULT_VALIDATION_SEEDS,
    StudyStalled,
    UntrustedReference,
    check_parameters,
    refuse_untrusted,
)
from flows.cluster import ClusterError, dask_cluster
from flows.logs import forward_library_logs
from flows.outputs import prepare_outputs, publish
from flows.reference import reference_table
from flows.report import write_recipes
from flows.studies import Campaign
from flows.supply import ReferenceSupply
from lambda_hat.io import DiskFull
from lambda_hat.problems.sizes import check_fits
from lambda_hat.problems.specs import check_held_out, load_problem_set, set_name
from lambda_hat.results.metadata import describe_run
from lambda_hat.samplers.configs import DEFAULT_METHODS, DEFAULT_REFERENCE, ReferenceConfig
from lambda_hat.settings import Settings
from lambda_hat.tuning.pinning import ReferenceChanged, UnitsChanged
from lambda_hat.tuning.search_samplers import describe_sampler
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.storage import StorageError
from lambda_hat.tuning.warm_start import campaign_warm_starts


def _tune_run_name() -> str:
    """``tune-<set>-<methods>`` (``recipe-…`` with ``--recipe``): the top flow run's name."""
    from prefect.runtime import flow_run

    parameters = flow_run.parameters
    methods = "-".join(parameters.get("methods") or DEFAULT_METHODS)
    kind = "recipe" if parameters.get("recipe") else "tune"
    return f"{kind}-{set_name(parameters.get('problems', 'default'))}-{methods}"


@flow(name="tune", flow_run_name=_tune_run_name, log_prints=True)
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
    reference_rel_se: float | None = None,
    reference_cross_check: bool = False,
    reference_shards: int = 1,
    repeats: int = DEFAULT_REPEATS,
    pruner: Literal["wilcoxon", "median", "none"] = "wilcoxon",
    sampler: Literal["tpe", "qmc-tpe", "random"] = "tpe",
    stop_at_noise_floor: bool = False,
    validate_top_k: int = DEFAULT_VALIDATE_TOP_K,
    validation_seeds: int = DEFAULT_VALIDATION_SEEDS,
    allow_untrusted_references: bool = False,
    recipe: bool = False,
    holdout: str | None = None,
    warm_start: str | None = None,
) -> dict[str, Any]:
    """Tune ``methods`` on ``problems`` (a preset or YAML path): ``n_trials`` trials per
    study of ``repeats`` runs each, then the ``validate_top_k`` best configurations
    rerun on ``validation_seeds`` fresh seeds each (0 turns validation off). With
    ``recipe``, one study per method across all the problems (a recipe study); with
    ``holdout`` (a problem set), each recommended configuration is then run on its
    problems on ``validation_seeds`` fresh seeds (flows/transfer.py). With ``warm_start`` (a
    recipe file), each new study's first trial is the recipe's configuration."""
    forward_library_logs()
    logger = get_run_logger()
    settings = Settings()
    parameters = {"problems": problems, "methods": methods, "n_trials": n_trials,
                  "repeats": repeats, "batch": batch, "pruner": pruner, "sampler": sampler,
                  "stop_at_noise_floor": stop_at_noise_floor,
                  "objective": objective,
                  "validate_top_k": validate_top_k, "validation_seeds": validation_seeds,
                  "recipe": recipe, "holdout": holdout, "methods_file": methods_file,
                  "reference_warmup": reference_warmup,
                  "reference_draws": reference_draws,
                  "reference_rel_se": reference_rel_se,
                  "reference_cross_check": reference_cross_check,
                  "reference_shards": reference_shards, "warm_start": warm_start}  # fmt: skip
    logger.info(
        "tune %s; command: %s; settings: %s",
        ", ".join(f"{k}={v}" for k, v in parameters.items()), command_line(), settings.public(),
    )  # fmt: skip
    # 1. Everything checked before anything runs (one line naming the field if not).
    specs, held_specs = problem_specs(settings, problems, holdout)
    spaces = load_methods(methods_file)
    check_parameters(
        methods, spaces, n_trials, batch, repeats, pruner, validate_top_k, validation_seeds,
        huber_k, objective, recipe, sampler,
    )  # fmt: skip
    # The spaces the studies tune (a recipe campaign's in its units) and their first trials.
    spaces, warm_starts = campaign_warm_starts(warm_start, spaces, methods, recipe)
    prepare_outputs(settings)
    config = ReferenceConfig(
        num_warmup=reference_warmup, num_draws=reference_draws, target_rel_se=reference_rel_se,
        cross_check=reference_cross_check, shards=reference_shards,
    )  # fmt: skip
    started = time.perf_counter()
    tuning = {"n_trials": n_trials, "batch": batch, "budget_sec": settings.budgets.trial_sec,
              "repeats": repeats, "pruner": pruner, "sampler": sampler,
              "stop_at_noise_floor": stop_at_noise_floor, "validate_top_k": validate_top_k,
              "validation_seeds": validation_seeds}  # fmt: skip
    # 2. Every study at once on one cluster, each as soon as its references are in.
    supply = ReferenceSupply(specs + held_specs, config, refresh_references, settings)
    with supply, dask_cluster(settings.cluster, role="trials") as address:
        studies, transfer_rows = Campaign(
            supply, address, settings, specs, held_specs, spaces, methods, tuning,
            objective=objective, huber_k=huber_k, recipe=recipe, problems=problems,
            holdout=holdout, allow_untrusted=allow_untrusted_references, warm_starts=warm_starts,
        ).run()  # fmt: skip
    # 3. The results: references, leaderboard, report, recipes.
    references = [ref for ref in supply.references() if ref is not None]
    create_table_artifact(
        key="reference-table",
        table=reference_table(references),
        description=f"HMC references for {problems}"
        + (f" and the held-out {holdout}" if holdout else "")
        + ", with their quality verdicts",
    )
    metadata = describe_run(
        command=command_line(), problems=problems, methods=methods, holdout=holdout,
        recipe=recipe, search={**tuning, "objective": objective}, sampler=describe_sampler(sampler),
        cluster=settings.cluster.model_dump(mode="json"),
        spaces={m: spaces[m].model_dump(mode="json") for m in methods},
    )  # fmt: skip
    published = publish(
        studies, transfer_rows, references, settings, problems, methods,
        time.perf_counter() - started, metadata,
    )  # fmt: skip
    if recipe and published["leaderboard"]:
        published["recipes"] = write_recipes(
            published["leaderboard"], studies, spaces,
            settings.artifacts_dir.resolve() / "recipes", holdout,
        )  # fmt: skip
        for path in published["recipes"]:
            logger.info("recipe: %s", path)
    if not allow_untrusted_references:
        refuse_untrusted(references)  # after the other problems' results are written
    logger.info(
        "%d studies in %.0f s; report: %s",
        len(studies), time.perf_counter() - started, published["report"],
    )  # fmt: skip
    return {"references": references, "studies": studies, **published}


def command_line() -> str:
    """The command that started this run, or the flow run's name under a deployment."""
    if Path(sys.argv[0]).name == "tune.py":
        return shlex.join(["python", "flows/tune.py", *sys.argv[1:]])
    from prefect.runtime import deployment, flow_run

    where = f"deployment {deployment.name}" if deployment.id else "called in Python"
    return f"Prefect flow run {flow_run.name} ({where})"


def problem_specs(
    settings: Settings, problems: str, holdout: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The problem set's specs and the held-out set's, checked to fit in memory and to be
    disjoint."""
    problem_set = load_problem_set(problems)
    check_fits(problem_set, settings.memory_limit_bytes(), problems)
    held_out = load_problem_set(holdout, "holdout") if holdout else None
    if held_out is not None:
        check_fits(held_out, settings.memory_limit_bytes(), holdout)
        check_held_out(problem_set, held_out)
    specs = [spec.model_dump(mode="json") for spec in problem_set.problems]
    held_specs = [spec.model_dump(mode="json") for spec in held_out.problems] if held_out else []
    return specs, held_specs


# Errors whose message says all a user needs: the terminal shows that one line (the
# traceback is in the log and the Prefect UI).
ONE_LINE_ERRORS = (
    StorageError, ClusterError, StudyStalled, UntrustedReference, DiskFull, ReferenceChanged,
    UnitsChanged,
)  # fmt: skip


def main(argv: list[str] | None = None, checked: argparse.Namespace | None = None) -> int:
    """The command line; ``checked``: arguments ``flows.cli.parse_args`` already checked."""
    from flows import terminal
    from flows.cli import parse_args, print_plan

    args = checked or parse_args(argv)
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
                reference_rel_se=args.reference_rel_se,
                reference_cross_check=args.reference_cross_check,
                reference_shards=args.reference_shards,
                repeats=args.repeats,
                pruner=args.pruner,
                sampler=args.sampler,
                stop_at_noise_floor=args.stop_at_noise_floor,
                validate_top_k=args.validate_top_k,
                validation_seeds=args.validation_seeds,
                allow_untrusted_references=args.allow_untrusted_references,
                recipe=args.recipe,
                holdout=args.holdout,
                warm_start=args.warm_start,
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
    from flows import terminal

    terminal.exit_process(main(checked=_CHECKED))
