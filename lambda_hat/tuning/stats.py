"""The intervals every reported error carries: a t interval on one problem's runs, and the
family error over several problems with the seed noise as its uncertainty.

>>> summary = error_summary([0.1, 0.3, 0.2], [3.1, 2.7, 3.2], llc_ref=3.0)
>>> round(summary["mean"], 3), round(summary["ci_low"], 3), round(summary["ci_high"], 3)
(0.2, 0.0, 0.448)
>>> round(summary["bias"], 3), summary["n_runs"]
(0.0, 3)
>>> family = family_error({"p_a": [0.10, 0.12], "p_b": [0.30, 0.26]})
>>> round(family["mean"], 3), family["n_problems"], family["n_runs"]
(0.195, 2, 4)
>>> family["ci_low"] < family["mean"] < family["ci_high"]
True
"""

from __future__ import annotations

import math
import statistics
from typing import Any


def t_quantile(level: float, dof: int) -> float:
    from scipy import stats  # scipy comes with jax; imported here to keep imports light

    return float(stats.t.ppf(0.5 + level / 2, dof))


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval for the mean (None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t_quantile(level, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return mean - half, mean + half


def error_summary(abs_errors: list[float], llc_hats: list[float], llc_ref: float) -> dict:
    """Mean absolute error with its 95 % t interval (its lower end clipped at 0: an
    absolute error is never negative), and the bias and sd of llc_hat."""
    interval = t_interval(abs_errors)
    return {
        "mean": statistics.fmean(abs_errors) if abs_errors else None,
        "ci_low": None if interval is None else max(interval[0], 0.0),
        "ci_high": None if interval is None else interval[1],
        "bias": statistics.fmean(llc_hats) - llc_ref if llc_hats else None,
        "sd": statistics.stdev(llc_hats) if len(llc_hats) > 1 else None,
        "llc_mean": statistics.fmean(llc_hats) if llc_hats else None,
        "n_runs": len(abs_errors),
    }


def family_error(per_problem: dict[str, list[float]], level: float = 0.95) -> dict[str, Any]:
    """The mean over problems of each problem's mean relative error, with a ``level``
    t interval for the run-to-run noise with these problems fixed: SE² = Σ_p s_p²/k_p / P²
    on Σ_p (k_p − 1) degrees of freedom (null where a problem has a single run)."""
    errors = {pid: values for pid, values in per_problem.items() if values}
    if not errors:
        return {"mean": None, "ci_low": None, "ci_high": None, "se": None, "n_problems": 0,
                "n_runs": 0, "per_problem": {}}  # fmt: skip
    means = {pid: statistics.fmean(values) for pid, values in errors.items()}
    count = len(means)
    mean = statistics.fmean(means.values())
    low = high = se = None
    if all(len(values) > 1 for values in errors.values()):
        se = math.sqrt(sum(statistics.variance(v) / len(v) for v in errors.values())) / count
        half = t_quantile(level, sum(len(values) - 1 for values in errors.values())) * se
        low, high = max(mean - half, 0.0), mean + half
    return {
        "mean": mean,
        "ci_low": low,
        "ci_high": high,
        "se": se,
        "n_problems": count,
        "n_runs": sum(len(values) for values in errors.values()),
        "per_problem": means,
    }
