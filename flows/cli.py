"""``python flows/tune.py`` arguments: validated up front, one-line errors, and --dry-run."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import optuna
from pydantic import ValidationError

from flows.checks import (
    DEFAULT_REPEATS,
    DEFAULT_VALIDATE_TOP_K,
    DEFAULT_VALIDATION_SEEDS,
    MAX_HUBER_K,
    MAX_TRIALS,
)
from flows.cluster import ClusterError, check_cluster
from flows.reference import DEFAULT_REFERENCE
from lambda_hat.cli import DefaultsHelp, OneLineErrors
from lambda_hat.io import check_writable, read_json
from lambda_hat.problems import PRESETS, SpecError, format_validation_error, load_problem_set
from lambda_hat.runners.hmc_reference import ReferenceConfig, reference_code_version
from lambda_hat.runners.run_method import METHODS
from lambda_hat.search_space import SearchSpaceError, load_methods
from lambda_hat.settings import Settings
from lambda_hat.sizes import check_fits, estimate, human
from lambda_hat.storage import StorageError, check_storage, engine_kwargs, finished_trials


def _int_between(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _float_in(low: float, high: float):
    """A finite number in (low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low < value <= high):
            raise argparse.ArgumentTypeError(f"must be > {low:g} and <= {high:g}, got {text}")
        return value

    return parse


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python flows/tune.py",
        description="Tune SGLD, MCLMC and VI hyperparameters against HMC reference LLCs.",
        epilog="Without PREFECT_API_URL a local Prefect server is started for the run. The "
        "report: artifacts/report/index.html. Ctrl-C stops with one line; rerun to resume.",
        formatter_class=DefaultsHelp,
    )
    p.add_argument(
        "--problems", default="default", help=f"a YAML file or a preset ({', '.join(PRESETS)})"
    )
    p.add_argument(
        "--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
        help="the cheap methods to tune",
    )  # fmt: skip
    p.add_argument(
        "--n-trials", type=_int_between(1, MAX_TRIALS), default=8, help="finished trials per study"
    )
    p.add_argument(
        "--batch", type=_int_between(1, MAX_TRIALS), default=2, help="trials in flight per study"
    )
    p.add_argument(
        "--objective", choices=["abs", "huber"], default="abs",
        help="per-run objective: |llc_hat − llc_ref| or its Huber loss",
    )  # fmt: skip
    p.add_argument(
        "--huber-k", type=_float_in(0.0, MAX_HUBER_K), default=1.0, help="huber δ = k·se_ref"
    )
    p.add_argument("--refresh-references", action="store_true", help="recompute HMC references")
    p.add_argument("--methods-file", default=None, help="YAML overriding the search spaces")
    p.add_argument(
        "--reference-warmup",
        type=_int_between(20, 1_000_000),
        default=DEFAULT_REFERENCE.num_warmup,
        help="HMC warmup steps per chain for the references",
    )
    p.add_argument(
        "--reference-draws",
        type=_int_between(4, 1_000_000),
        default=DEFAULT_REFERENCE.num_draws,
        help="HMC draws per chain for the references",
    )
    p.add_argument(
        "--repeats",
        type=_int_between(1, 100),
        default=None,
        help="runs per trial, repeat k on the study's k-th common seed "
        f"(default LAMBDA_HAT_TUNING__REPEATS or {DEFAULT_REPEATS})",
    )
    p.add_argument(
        "--pruner",
        choices=["wilcoxon", "median", "none"],
        default=None,
        help="stop losing trials between repeats (default LAMBDA_HAT_TUNING__PRUNER or wilcoxon)",
    )
    p.add_argument(
        "--validate-top-k",
        type=_int_between(0, 100),
        default=None,
        help="configurations rerun on fresh seeds after the search; 0: no validation "
        f"(default LAMBDA_HAT_TUNING__VALIDATE_TOP_K or {DEFAULT_VALIDATE_TOP_K})",
    )
    p.add_argument(
        "--validation-seeds",
        type=_int_between(2, 1000),
        default=None,
        help="fresh seeds per validated configuration "
        f"(default LAMBDA_HAT_TUNING__VALIDATION_SEEDS or {DEFAULT_VALIDATION_SEEDS})",
    )
    p.add_argument(
        "--allow-untrusted-references",
        action="store_true",
        help="tune even against a reference whose quality verdict is 'untrusted'",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, compute nothing")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and validate everything a run needs before anything starts."""
    p = parser()
    args = p.parse_args(argv)
    try:
        problem_set = load_problem_set(args.problems)
        load_methods(args.methods_file)
        settings = Settings()
        check_fits(problem_set, settings.memory_limit_bytes(), args.problems)
        for name, value in settings.tuning.model_dump().items():  # the CLI's own wins
            if getattr(args, name) is None:
                setattr(args, name, value)
        check_writable(settings.results_dir, "results_dir")
        check_writable(settings.artifacts_dir, "artifacts_dir")
        check_cluster(settings.cluster)
        if settings.optuna_storage is not None:  # (SQLite: connecting would create the file)
            check_storage(settings.storage_url())
    except ValidationError as error:  # (a ValueError too: keep this clause first)
        p.error(f"settings (LAMBDA_HAT_*): {format_validation_error(error)}")
    except (SpecError, SearchSpaceError, StorageError, ClusterError, ValueError) as error:
        p.error(str(error))
    return args


def _reference_cached(artifacts_dir: Path, pid: str, config: ReferenceConfig) -> bool:
    record = read_json(artifacts_dir / "problems" / pid / "ref.json")
    return bool(record) and record.get("code_version") == reference_code_version(config)


def _existing_storage(url: str) -> optuna.storages.RDBStorage | None:
    """The Optuna storage, or None where a SQLite file does not exist yet (a dry run must
    not create it)."""
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))


def _finished(storage: optuna.storages.RDBStorage | None, name: str) -> int:
    if storage is None:
        return 0
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
        f"{args.n_trials} trials per study × {args.repeats} repeats ({args.pruner} pruner), "
        f"{args.batch} trials in flight, objective {args.objective}; validation: top "
        f"{args.validate_top_k} configurations × {args.validation_seeds} fresh seeds"
    )
    storage = _existing_storage(settings.storage_url())
    for spec in problem_set.problems:
        config = ReferenceConfig(num_warmup=args.reference_warmup, num_draws=args.reference_draws)
        cached = _reference_cached(settings.artifacts_dir, spec.pid, config)
        reference = (
            "recompute (refresh)"
            if args.refresh_references
            else ("cached" if cached else "to compute")
        )
        memory = human(estimate(spec).total)
        print(f"- {spec.name} ({spec.pid}): reference {reference}; memory ≈ {memory}")
        for method in args.methods:
            done = _finished(storage, f"{spec.pid}:{method}")
            more = " (more than --n-trials: none will run)" if done > args.n_trials else ""
            print(
                f"    study {spec.pid}:{method}: {done} finished, "
                f"{max(args.n_trials - done, 0)} to run{more}"
            )
