"""Optuna pruners by name, and how many of a trial's pruner steps go out at once.

>>> type(make_pruner("wilcoxon")).__name__, first_wave("wilcoxon", 3), first_wave("none", 3)
('WilcoxonPruner', 2, 3)
"""

from __future__ import annotations

import warnings
from typing import Literal

import optuna

PrunerKind = Literal["wilcoxon", "median", "none"]


# With K repeats a one-sided Wilcoxon signed-rank test on n ≤ K paired differences cannot
# give a p-value below 2^-n: Optuna's default threshold (0.1) could not prune before the
# 4th repeat, i.e. never at the default K = 3. At 0.3 a trial that loses both of its first
# two paired comparisons against the best trial (p = 0.25) stops there.
WILCOXON_P_THRESHOLD = 0.3


def make_pruner(kind: PrunerKind) -> optuna.pruners.BasePruner:
    """``wilcoxon``: Optuna's WilcoxonPruner on the per-repeat objectives (paired with the
    best trial's by seed); ``median``: MedianPruner on the running mean; ``none``."""
    if kind == "wilcoxon":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(
                p_threshold=WILCOXON_P_THRESHOLD, n_startup_steps=2
            )
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner: unknown {kind!r} (allowed: wilcoxon, median, none)")


def first_wave(kind: PrunerKind, steps: int) -> int:
    """Pruner steps submitted at once before the pruner can judge; later ones go one at a
    time so that a pruned trial submits nothing more. Without a pruner all go at once."""
    return min(steps, {"wilcoxon": 2, "median": 1, "none": steps}[kind])
