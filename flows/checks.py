"""Checks the tune flow makes before it spends compute: its parameters (a deployment run
gets them from the UI form, so they are refused here in one line) and the quality of the
references it is about to tune against."""

from __future__ import annotations

import math
from typing import Any

from lambda_hat.samplers.configs import DEFAULT_REFERENCE
from lambda_hat.settings import TuningSettings
from lambda_hat.tuning.search_samplers import SEARCH_SAMPLERS

# K = 3 repeats per trial, the top 3 configurations validated on 8 fresh seeds each: what
# a cluster run should use (scripts/run.sh passes lighter ones to fit a laptop). One
# source for them: the settings' defaults.
_TUNING = TuningSettings()
DEFAULT_REPEATS = _TUNING.repeats
DEFAULT_VALIDATE_TOP_K = _TUNING.validate_top_k
DEFAULT_VALIDATION_SEEDS = _TUNING.validation_seeds
# The flows' HMC reference: 4 chains × (500 warmup + 2000 draws), NUTS at target_accept
# 0.99 (docs/reference-accuracy.md says why).
DEFAULT_REFERENCE_WARMUP = DEFAULT_REFERENCE.num_warmup
DEFAULT_REFERENCE_DRAWS = DEFAULT_REFERENCE.num_draws


MAX_TRIALS = 100_000
# δ = k·se_ref: beyond ~100 SE the Huber loss is the squared error everywhere (and an
# infinite k made every objective 0).
MAX_HUBER_K = 100.0


class StudyStalled(RuntimeError):
    """No run finished within the stall timeout. One line."""


class UntrustedReference(RuntimeError):
    """A reference failed its quality checks: tuning against it would score every trial
    against a wrong number. One line."""


def refuse_untrusted(references: list[dict[str, Any]]) -> None:
    untrusted = [ref for ref in references if ref.get("quality") == "untrusted"]
    if untrusted:
        which = "; ".join(
            f"{ref['name']} ({ref['pid']}): {', '.join(ref.get('quality_reasons') or [])}"
            for ref in untrusted
        )
        raise UntrustedReference(
            f"untrusted reference: {which}. Raise --reference-draws/--reference-warmup, "
            "or pass --allow-untrusted-references to tune against it anyway"
        )


def check_distinct_methods(methods: list[str]) -> None:
    """Each study once: a method named twice would plan (and list) its studies twice."""
    repeated = sorted({method for method in methods if methods.count(method) > 1})
    if repeated:
        raise ValueError(f"methods: {', '.join(repeated)} given more than once")


def check_recipe_objective(objective: str, recipe: bool) -> None:
    if recipe and objective != "abs":
        raise ValueError(
            f"objective: {objective!r} is for per-problem studies; a recipe's objective is "
            "the mean relative error over problems (leave objective at 'abs')"
        )


def check_parameters(
    methods: list[str],
    spaces: dict,
    n_trials: int,
    batch: int,
    repeats: int = DEFAULT_REPEATS,
    pruner: str = "wilcoxon",
    validate_top_k: int = DEFAULT_VALIDATE_TOP_K,
    validation_seeds: int = DEFAULT_VALIDATION_SEEDS,
    huber_k: float = 1.0,
    objective: str = "abs",
    recipe: bool = False,
    sampler: str = "tpe",
) -> None:
    """Deployment runs get their parameters from the UI: refuse bad ones in one line."""
    check_recipe_objective(objective, recipe)
    unknown = sorted(set(methods) - set(spaces))
    if unknown or not methods:
        raise ValueError(f"methods: unknown {unknown} (allowed: {', '.join(spaces)})")
    check_distinct_methods(methods)
    if not (1 <= n_trials <= MAX_TRIALS and 1 <= batch <= MAX_TRIALS):
        raise ValueError(
            f"n_trials and batch must be between 1 and {MAX_TRIALS}, got {n_trials} and {batch}"
        )
    if not (math.isfinite(huber_k) and 0 < huber_k <= MAX_HUBER_K):
        raise ValueError(f"huber_k must be > 0 and <= {MAX_HUBER_K:g}, got {huber_k}")
    if not 1 <= repeats <= 100:
        raise ValueError(f"repeats must be between 1 and 100, got {repeats}")
    if pruner not in ("wilcoxon", "median", "none"):
        raise ValueError(f"pruner: unknown {pruner!r} (allowed: wilcoxon, median, none)")
    if sampler not in SEARCH_SAMPLERS:
        raise ValueError(f"sampler: unknown {sampler!r} (allowed: {', '.join(SEARCH_SAMPLERS)})")
    if not 0 <= validate_top_k <= 100:
        raise ValueError(f"validate_top_k must be between 0 and 100, got {validate_top_k}")
    if not 2 <= validation_seeds <= 1000:
        raise ValueError(
            f"validation_seeds must be between 2 and 1000 (an interval needs 2), "
            f"got {validation_seeds}"
        )
