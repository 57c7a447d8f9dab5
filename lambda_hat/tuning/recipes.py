"""Recipes: one configuration per method, tuned across a family of problems.

Per-problem tuning fits a configuration to one problem's scale. A *recipe* study instead
judges each configuration on every problem of a set: a trial runs it ``repeats`` times on
each problem (on the study's common seeds) and its objective is the family error, the mean
over problems of each problem's mean relative error |llc_hat − llc_ref| / llc_ref. The
pruner sees one step per problem (its mean relative error), so a configuration that loses
on the first problems stops there; the Wilcoxon pruner pairs them with the best trial's
errors on the same problems.

Step sizes: SGLD's drift is (ε/2)·nβ·∇L (nβ = n / log n), so a step size right at
n = 1000 is about 6× too large at n = 8000. In a recipe study SGLD's step size is tuned
in units of 1/(nβ) (``step_size_scale: per_nbeta``), unless the methods file fixes
``step_size_scale``.
pSGLD needs no scale (its preconditioner divides by the gradient's size) and MCLMC tunes
its own step. ``benchmarks/recipes.py`` measures the choice.

A recipe study is run by the one driver with the ``Recipe`` kind
(``lambda_hat.tuning.kinds``); this module holds what only recipes have: the space they
tune, and the transfer figures of a recommendation on held-out problems.
"""

from __future__ import annotations

import json
from typing import Any

from lambda_hat.tuning.kinds import relative_errors
from lambda_hat.tuning.search_space import MethodSpace, recipe_space
from lambda_hat.tuning.stats import family_error


def recommended_config(row: dict[str, Any], spaces: dict[str, MethodSpace]) -> dict[str, Any]:
    """A leaderboard row's recommendation as a full method config (a recipe's in its
    recipe space: SGLD's step size per nβ)."""
    space = spaces[row["method"]]
    if row.get("kind") == "recipe":
        space = recipe_space(space)
    return space.config(json.loads(row["params_json"])).model_dump(mode="json")


def transfer_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A configuration's family error on its transfer rows (held-out problems)."""
    summary = family_error(relative_errors(rows))
    summary["failed"] = sum(row["rel_error"] is None for row in rows)
    return summary


def transfer_fields(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The leaderboard's transfer columns from a configuration's transfer rows."""
    summary = transfer_summary(rows)
    return {
        "transfer_rel_error_mean": summary["mean"],
        "transfer_rel_error_ci_low": summary["ci_low"],
        "transfer_rel_error_ci_high": summary["ci_high"],
        "n_transfer_problems": summary["n_problems"],
        "n_transfer_runs": len(rows),
        "n_transfer_failed": summary["failed"],
    }
