"""The value of a recipe, measured: one configuration tuned across the ``dln-family`` tuning
set against the per-problem best configurations, both run on the held-out set.

    .venv/bin/python benchmarks/recipes.py        # ~35 min on 2 cores (defaults below)

Three campaigns of the tune flow (local Prefect server, LocalCluster, SQLite Optuna), all
with ``--holdout dln-family-holdout``:

1. **per problem**: one study per (tuning problem, method); each recommendation is
   validated on its own problem and then run on every held-out problem;
2. **recipe**: one study per method across the four tuning problems (``--recipe``); its
   recommendation is validated on all four and run on the held-out problems;
3. **recipe, absolute SGLD step**: as 2 for SGLD with ``step_size_scale: absolute`` (the
   step size tuned as is, over the per-problem range), to measure the choice of tuning it in
   units of 1/(nβ).

Every error is a mean relative error |llc_hat − llc_ref| / llc_ref over problems (mean
over fresh seeds within a problem first) with a 95 % t interval for the seed noise with
the problems fixed (``lambda_hat.tuning.stats.family_error``). Results go to
``benchmarks/results/recipes.json`` and the recipes themselves (methods files with their
evidence) to ``benchmarks/results/recipes/``; docs/benchmarks.md summarises them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ABSOLUTE_SGLD = """
methods:
  sgld:
    fixed: {num_steps: 3000, burn_in_frac: 0.2, thinning: 5, num_chains: 4,
            step_size_scale: absolute}
    space:
      step_size: {type: float, low: 1.0e-6, high: 1.0e-2, log: true}
      batch_size: {type: categorical, choices: [32, 64, 128, 256]}
      decay_exponent: {type: float, low: 0.0, high: 0.5}
"""


def _row_summary(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("problem_name", "method", "params_json", "validated_rel_error_mean",
            "validated_rel_error_ci_low", "validated_rel_error_ci_high", "n_problems",
            "n_validation_runs", "transfer_rel_error_mean", "transfer_rel_error_ci_low",
            "transfer_rel_error_ci_high", "n_transfer_problems", "n_transfer_runs",
            "n_transfer_failed", "search_objective")  # fmt: skip
    return {key: row.get(key) for key in keys}


def _per_problem_summary(rows: list[dict[str, Any]], method: str) -> dict[str, Any]:
    """The per-problem recommendations of one method: each one's own validated error and
    its transfer error; the mean, min and max of the transfer errors over them."""
    mine = [row for row in rows if row["method"] == method]
    transfer = [
        r["transfer_rel_error_mean"] for r in mine if r["transfer_rel_error_mean"] is not None
    ]
    own = [r["validated_rel_error_mean"] for r in mine if r["validated_rel_error_mean"] is not None]
    return {
        "configs": [_row_summary(row) for row in mine],
        "own_problem_rel_error_mean": statistics.fmean(own) if own else None,
        "transfer_rel_error_mean_over_configs": statistics.fmean(transfer) if transfer else None,
        "transfer_rel_error_best_config": min(transfer) if transfer else None,
        "transfer_rel_error_worst_config": max(transfer) if transfer else None,
    }


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _interval(row: dict[str, Any], prefix: str) -> str:
    failed = row.get("n_transfer_failed") if prefix.startswith("transfer") else None
    return (
        f"{_pct(row.get(prefix + '_mean'))} [{_pct(row.get(prefix + '_ci_low'))}, "
        f"{_pct(row.get(prefix + '_ci_high'))}]" + (f" ({failed} failed)" if failed else "")
    )


def _failed(configs: list[dict[str, Any]]) -> str:
    failed = sum(config.get("n_transfer_failed") or 0 for config in configs)
    return f" ({failed} failed)" if failed else ""


def summary_table(result: dict[str, Any]) -> str:
    lines = [
        "| method | recipe: validated (tuning set) | recipe: transfer (held out) | per-problem "
        "best: own problem (mean of 4) | per-problem best: transfer, mean [min, max] of 4 |",
        "|---|---|---|---|---|",
    ]
    for method, entry in result["methods"].items():
        recipe, per = entry["recipe"], entry["per_problem"]
        lines.append(
            f"| {method} | {_interval(recipe, 'validated_rel_error')} | "
            f"{_interval(recipe, 'transfer_rel_error')} | "
            f"{_pct(per['own_problem_rel_error_mean'])} | "
            f"{_pct(per['transfer_rel_error_mean_over_configs'])} "
            f"[{_pct(per['transfer_rel_error_best_config'])}, "
            f"{_pct(per['transfer_rel_error_worst_config'])}]"
            f"{_failed(per['configs'])} |"
        )
    absolute = result.get("sgld_absolute_step_recipe")
    if absolute:
        lines.append(
            f"| sgld, absolute step | {_interval(absolute, 'validated_rel_error')} | "
            f"{_interval(absolute, 'transfer_rel_error')} | | |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=["sgld", "psgld", "mclmc"])
    parser.add_argument("--n-trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--validate-top-k", type=int, default=3)
    parser.add_argument("--validation-seeds", type=int, default=5)
    parser.add_argument("--trial-sec", type=float, default=60.0)
    parser.add_argument("--reference-warmup", type=int, default=400)
    parser.add_argument("--reference-draws", type=int, default=1500)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/recipes.json"))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="lambda-hat-recipes-"))
    os.environ.update(
        LAMBDA_HAT_RESULTS_DIR=str(work / "results"),
        LAMBDA_HAT_ARTIFACTS_DIR=str(work / "artifacts"),
        LAMBDA_HAT_BUDGETS__TRIAL_SEC=str(args.trial_sec),
        LAMBDA_HAT_CLUSTER__KIND="local",
    )
    os.environ.pop("LAMBDA_HAT_OPTUNA_STORAGE", None)
    from flows import terminal
    from flows.tune import tune
    from lambda_hat.io import atomic_write_json

    common = {
        "problems": "dln-family", "holdout": "dln-family-holdout", "n_trials": args.n_trials,
        "repeats": args.repeats, "validate_top_k": args.validate_top_k,
        "validation_seeds": args.validation_seeds, "reference_warmup": args.reference_warmup,
        "reference_draws": args.reference_draws, "batch": 2,
        "allow_untrusted_references": True,  # (each verdict is in the results file)
    }  # fmt: skip
    seconds = {}
    with terminal.prefect_api():
        started = time.perf_counter()
        per_problem = tune(methods=args.methods, **common)
        seconds["per_problem"] = time.perf_counter() - started
        started = time.perf_counter()
        recipe = tune(methods=args.methods, recipe=True, **common)
        seconds["recipe"] = time.perf_counter() - started
        # The recipes themselves, kept with their evidence (the variant below would
        # overwrite the SGLD one in the artifacts directory).
        kept = Path(args.out).parent / "recipes"
        kept.mkdir(parents=True, exist_ok=True)
        for path in recipe.get("recipes", []):
            shutil.copyfile(path, kept / Path(path).name)
        absolute = None
        if "sgld" in args.methods:
            # Its own Optuna storage (the study name is the same, the space is not).
            os.environ["LAMBDA_HAT_RESULTS_DIR"] = str(work / "results-absolute")
            methods_file = work / "absolute.yaml"
            methods_file.write_text(ABSOLUTE_SGLD)
            started = time.perf_counter()
            absolute = tune(methods=["sgld"], recipe=True, methods_file=str(methods_file), **common)
            seconds["sgld_absolute"] = time.perf_counter() - started
    recipe_rows = {row["method"]: row for row in recipe["leaderboard"]}
    result = {
        "settings": {**vars(args), "problems": "dln-family", "holdout": "dln-family-holdout"},
        "seconds": {key: round(value, 1) for key, value in seconds.items()},
        "references": [
            {
                key: ref.get(key)
                for key in ("name", "pid", "llc_ref", "se_ref", "lambda_theory", "quality")
            }  # fmt: skip
            for ref in recipe["references"]
        ],
        "methods": {
            method: {
                "recipe": _row_summary(recipe_rows[method]),
                "per_problem": _per_problem_summary(per_problem["leaderboard"], method),
            }
            for method in args.methods
            if method in recipe_rows
        },
        "sgld_absolute_step_recipe": (
            _row_summary(absolute["leaderboard"][0])
            if absolute and absolute["leaderboard"]
            else None
        ),
        "work_dir": str(work),
    }
    result["table"] = summary_table(result)
    atomic_write_json(Path(args.out), result)
    print(result["table"])
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
