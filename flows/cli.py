"""``python flows/tune.py`` arguments: validated up front, one-line errors, and --dry-run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.arguments import parser
from flows.checks import check_distinct_methods, check_recipe_objective
from flows.cluster import ClusterError, check_cluster
from lambda_hat.io import check_writable
from lambda_hat.problems.sizes import check_fits, estimate, human
from lambda_hat.problems.specs import (
    SpecError,
    check_held_out,
    format_validation_error,
    load_problem_set,
    set_name,
)
from lambda_hat.reference.record import current_reference
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.settings import Settings
from lambda_hat.tuning.search_space import SearchSpaceError, load_methods
from lambda_hat.tuning.storage import StorageError, check_storage, engine_kwargs, finished_trials
from lambda_hat.tuning.warm_start import campaign_warm_starts


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate everything a run needs before anything starts."""
    p = parser()  # (flows.arguments: light, so --help is fast)
    args = p.parse_args(argv)
    try:
        problem_set = load_problem_set(args.problems)
        spaces = load_methods(args.methods_file)
        check_distinct_methods(args.methods)
        campaign_warm_starts(args.warm_start, spaces, args.methods, args.recipe)
        settings = Settings()
        check_fits(problem_set, settings.memory_limit_bytes(), args.problems)
        check_recipe_objective(args.objective, args.recipe)
        if args.holdout is not None:
            held_out = load_problem_set(args.holdout, "holdout")
            check_fits(held_out, settings.memory_limit_bytes(), args.holdout)
            check_held_out(problem_set, held_out)
        for name, value in settings.tuning.model_dump().items():  # the CLI's own wins
            if getattr(args, name) is None:
                setattr(args, name, value)
        check_writable(settings.results_dir, "results_dir")
        check_writable(settings.artifacts_dir, "artifacts_dir")
        check_cluster(settings.cluster)
        check_storage(settings.storage_url())  # (a SQLite file is read, never created)
    except ValidationError as error:  # (a ValueError too: keep this clause first)
        p.error(f"settings (LAMBDA_HAT_*): {format_validation_error(error)}")
    except (SpecError, SearchSpaceError, StorageError, ClusterError, ValueError) as error:
        p.error(str(error))
    return args


def _reference_cached(artifacts_dir: Path, spec: Any, config: ReferenceConfig) -> bool:
    return current_reference(artifacts_dir, spec, config) is not None


def _existing_storage(url: str) -> Any | None:
    """The Optuna storage, or None where a SQLite file does not exist yet (a dry run must
    not create it)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    import optuna

    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))


def _finished(storage: Any | None, name: str) -> int:
    if storage is None:
        return 0
    import optuna

    try:
        return finished_trials(optuna.load_study(study_name=name, storage=storage))
    except KeyError:
        return 0


def print_plan(args: argparse.Namespace) -> None:
    settings = Settings()
    problem_set = load_problem_set(args.problems)
    print(f"settings: {settings.public()}")
    print(
        f"plan: {len(problem_set.problems)} problems × {len(args.methods)} methods, "
        f"{args.n_trials} trials per study × {args.repeats} repeats ({args.pruner} pruner, "
        f"{args.sampler} sampler), "
        f"{args.batch} trials in flight, objective {args.objective}; validation: top "
        f"{args.validate_top_k} configurations × {args.validation_seeds} fresh seeds"
    )
    if args.warm_start:
        print(f"warm start: each new study's first trial from {args.warm_start}")
    storage = _existing_storage(settings.storage_url())
    if args.recipe:
        print(f"recipe: one study per method across the {len(problem_set.problems)} problems")
        for method in args.methods:
            name = f"recipe-{set_name(args.problems)}:{method}"
            done = _finished(storage, name)
            print(f"    study {name}: {done} finished, {max(args.n_trials - done, 0)} to run")
    config = ReferenceConfig(
        num_warmup=args.reference_warmup,
        num_draws=args.reference_draws,
        target_rel_se=args.reference_rel_se,
        cross_check=args.reference_cross_check,
        shards=args.reference_shards,
    )
    for spec in problem_set.problems:
        _print_problem(spec, args, settings, config)
        for method in [] if args.recipe else args.methods:
            done = _finished(storage, f"{spec.pid}:{method}")
            more = " (more than --n-trials: none will run)" if done > args.n_trials else ""
            print(
                f"    study {spec.pid}:{method}: {done} finished, "
                f"{max(args.n_trials - done, 0)} to run{more}"
            )
    if args.holdout is not None:
        held_out = load_problem_set(args.holdout, "holdout").problems
        print(
            f"transfer: each recommended configuration on the {len(held_out)} held-out "
            f"problems of {args.holdout} × {args.validation_seeds} fresh seeds"
        )
        for spec in held_out:
            _print_problem(spec, args, settings, config)


def _print_problem(spec, args: argparse.Namespace, settings: Settings, config) -> None:
    cached = _reference_cached(settings.artifacts_dir, spec, config)
    reference = (
        "recompute (refresh)" if args.refresh_references else ("cached" if cached else "to compute")
    )
    print(
        f"- {spec.name} ({spec.pid}): reference {reference}; memory ≈ {human(estimate(spec).total)}"
    )
