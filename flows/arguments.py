"""The arguments of ``python flows/tune.py``, in a module that imports nothing heavy:
``--help`` and argument errors answer before JAX, Prefect or Optuna load. What needs them
(files, settings, storage) is checked in ``flows/cli.py``."""

from __future__ import annotations

import argparse

from flows.checks import (
    DEFAULT_REFERENCE_DRAWS,
    DEFAULT_REFERENCE_WARMUP,
    DEFAULT_REPEATS,
    DEFAULT_VALIDATE_TOP_K,
    DEFAULT_VALIDATION_SEEDS,
    MAX_HUBER_K,
    MAX_TRIALS,
)
from lambda_hat.arguments import DefaultsHelp, OneLineErrors, float_in, int_between
from lambda_hat.problems.specs import PRESETS
from lambda_hat.samplers.configs import DEFAULT_METHODS, METHOD_NAMES


def parser() -> argparse.ArgumentParser:
    p = OneLineErrors(
        prog="python flows/tune.py",
        description="Tune SGLD, pSGLD, MCLMC and VI hyperparameters against HMC reference LLCs.",
        epilog="Without PREFECT_API_URL a local Prefect server is started for the run. The "
        "report: artifacts/report/index.html. Ctrl-C stops with one line; rerun to resume.",
        formatter_class=DefaultsHelp,
    )
    p.add_argument(
        "--problems", default="default", help=f"a YAML file or a preset ({', '.join(PRESETS)})"
    )
    p.add_argument(
        "--methods", nargs="+", choices=list(METHOD_NAMES), default=list(DEFAULT_METHODS),
        help="the cheap methods to tune",
    )  # fmt: skip
    p.add_argument(
        "--n-trials", type=int_between(1, MAX_TRIALS), default=8, help="finished trials per study"
    )
    p.add_argument(
        "--batch", type=int_between(1, MAX_TRIALS), default=2, help="trials in flight per study"
    )
    p.add_argument(
        "--objective", choices=["abs", "huber"], default="abs",
        help="per-run objective: |llc_hat − llc_ref| or its Huber loss",
    )  # fmt: skip
    p.add_argument(
        "--huber-k", type=float_in(0.0, MAX_HUBER_K), default=1.0, help="huber δ = k·se_ref"
    )
    p.add_argument("--refresh-references", action="store_true", help="recompute HMC references")
    p.add_argument("--methods-file", default=None, help="YAML overriding the search spaces")
    p.add_argument(
        "--warm-start", default=None, metavar="FILE",
        help="a recipe (artifacts/recipes/<set>-<method>.yaml): each new study's first trial "
        "is its configuration",
    )  # fmt: skip
    p.add_argument(
        "--reference-warmup",
        type=int_between(20, 1_000_000),
        default=DEFAULT_REFERENCE_WARMUP,
        help="HMC warmup steps per chain for the references",
    )
    p.add_argument(
        "--reference-draws",
        type=int_between(4, 1_000_000),
        default=DEFAULT_REFERENCE_DRAWS,
        help="HMC draws per chain for the references",
    )
    p.add_argument(
        "--reference-rel-se",
        type=float_in(0.0, 0.5),
        default=None,
        help="precision target: after --reference-draws, a reference keeps drawing until "
        "se/llc is at most this (at most 10× the draws, or until its budget ends)",
    )
    p.add_argument(
        "--reference-shards",
        type=int,
        choices=(1, 2, 4),
        default=1,
        help="run each reference's 4 chains as this many tasks on the reference cluster "
        "(1, 2 or 4), pooled into one ref.json",
    )
    p.add_argument(
        "--reference-cross-check",
        action="store_true",
        help="check each reference with a second, independent sampler (adjusted MCLMC); "
        "a disagreement makes it warn or untrusted",
    )
    p.add_argument(
        "--repeats",
        type=int_between(1, 100),
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
        "--sampler",
        choices=["tpe", "qmc-tpe", "random"],
        default=None,
        help="what proposes the configurations (default LAMBDA_HAT_TUNING__SAMPLER or tpe)",
    )
    p.add_argument(
        "--stop-at-noise-floor",
        action="store_true",
        help="end a study early once its best trial is within 2 combined SE (reference and "
        "seed noise) of zero error: no further trial could beat it by more",
    )
    p.add_argument(
        "--validate-top-k",
        type=int_between(0, 100),
        default=None,
        help="configurations rerun on fresh seeds after the search; 0: no validation "
        f"(default LAMBDA_HAT_TUNING__VALIDATE_TOP_K or {DEFAULT_VALIDATE_TOP_K})",
    )
    p.add_argument(
        "--validation-seeds",
        type=int_between(2, 1000),
        default=None,
        help="fresh seeds per validated configuration "
        f"(default LAMBDA_HAT_TUNING__VALIDATION_SEEDS or {DEFAULT_VALIDATION_SEEDS})",
    )
    p.add_argument(
        "--allow-untrusted-references",
        action="store_true",
        help="tune even against a reference whose quality verdict is 'untrusted'",
    )
    p.add_argument(
        "--recipe",
        action="store_true",
        help="one study per method across every problem of the set: a configuration judged "
        "by its mean relative error over the problems (a recipe), not one per problem",
    )
    p.add_argument(
        "--holdout",
        default=None,
        help="a problem set (YAML or preset) the recommended configurations are run on "
        "after validation, on fresh seeds (rows with stage 'transfer')",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, compute nothing")
    return p
