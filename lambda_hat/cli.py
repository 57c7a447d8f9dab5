"""``python -m lambda_hat``: compute HMC references for a problem set and print a table.

Writes ``<artifacts>/problems/<pid>/{spec.yaml, ref.json}`` and caches trained optima
under ``<results>/targets``. (The Prefect flows replace this as the main job later.)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from lambda_hat.arguments import OneLineErrors
from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.io import atomic_write_bytes
from lambda_hat.problems import PRESETS, SpecError, format_validation_error, load_problem_set
from lambda_hat.runners.hmc_reference import BudgetError, ReferenceConfig, ReferenceResult, run
from lambda_hat.settings import Settings
from lambda_hat.sizes import check_fits
from lambda_hat.targets import OptimumError, build_problem


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="python -m lambda_hat",
        description="Compute HMC reference LLCs and compare them with closed-form values.",
    )
    parser.add_argument(
        "--problems", default="default", help=f"a YAML file or a preset ({', '.join(PRESETS)})"
    )
    parser.add_argument("--algorithm", choices=["nuts", "hmc"], default="nuts")
    parser.add_argument("--num-chains", type=int, default=4)
    parser.add_argument("--num-warmup", type=int, default=500)
    parser.add_argument("--num-draws", type=int, default=1000, help="kept draws per chain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-sec", type=float, default=None, help="per problem")
    parser.add_argument("--artifacts-dir", type=Path, default=Path("artifacts"))
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    return parser


def _row(name: str, result: ReferenceResult) -> str:
    theory = f"{result.lambda_theory:8.3f}" if result.lambda_theory is not None else "       -"
    if result.lambda_theory:
        rel = f"{100 * (result.llc_ref - result.lambda_theory) / result.lambda_theory:+6.1f}%"
    else:
        rel = "      -"
    return (
        f"{name:<20} {result.pid:<14} {result.d:>5} {result.n:>7} "
        f"{result.llc_ref:8.3f} ± {result.se_ref:5.3f} {theory} {rel} "
        f"{result.rhat:6.3f} {result.divergences:>5} {result.runtime_sec:8.1f} "
        f"{result.quality}"
        + (f" ({'; '.join(result.quality_reasons)})" if result.quality_reasons else "")
    )


HEADER = (
    f"{'problem':<20} {'pid':<14} {'d':>5} {'n':>7} {'llc_ref':>8}   {'se':>5} "
    f"{'λ_theory':>8} {'error':>7} {'R-hat':>6} {'div':>5} {'time_s':>8} quality"
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        problem_set = load_problem_set(args.problems)
        check_fits(problem_set, Settings().memory_limit_bytes(), args.problems)
        config = ReferenceConfig(
            algorithm=args.algorithm,
            num_chains=args.num_chains,
            num_warmup=args.num_warmup,
            num_draws=args.num_draws,
            seed=args.seed,
        )
        if args.budget_sec is not None and args.budget_sec <= 0:
            raise SpecError(f"--budget-sec: must be > 0, got {args.budget_sec:g}")
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:  # (the settings' or the reference config's)
        what = "settings (LAMBDA_HAT_*)" if error.title == "Settings" else "reference config"
        print(f"error: {what}: {format_validation_error(error)}", file=sys.stderr)
        return 2

    enable_compilation_cache()
    print(HEADER, flush=True)
    for spec in problem_set.problems:
        try:
            problem = build_problem(spec, cache_dir=args.results_dir / "targets")
        except OptimumError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        folder = args.artifacts_dir / "problems" / problem.pid
        atomic_write_bytes(
            folder / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json")).encode()
        )
        started = time.perf_counter()

        def progress(
            done: int, total: int, name: str = spec.name, started: float = started
        ) -> None:
            elapsed = time.perf_counter() - started
            print(f"  {name}: {done}/{total} draws per chain ({elapsed:.1f} s)", file=sys.stderr)

        print(
            f"  {spec.name}: d={problem.d}, n={problem.n}: compiling and adapting "
            f"({config.num_warmup} warmup steps per chain)...",
            file=sys.stderr,
            flush=True,
        )
        try:
            result = run(
                problem, config, budget_sec=args.budget_sec, out_dir=folder, progress=progress
            )
        except BudgetError as error:
            print(f"error: {spec.name}: {error}", file=sys.stderr)
            return 1
        print(_row(spec.name, result), flush=True)
    return 0
