"""Which points each report plot draws, picked from the rows of ``runs.parquet`` and the
leaderboard: a study's trials, a problem's configurations, the calibration of a method
across problems, and a method's error against one hyperparameter."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from lambda_hat.results import plots


def study_trials(runs: Sequence[dict[str, Any]], study_name: str) -> list[dict[str, Any]]:
    """One point per told search trial of a study, from its runs' rows: the trial's
    objective, or for a pruned trial (which has none) the mean of its runs so far."""
    by_trial: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in runs:
        if row.get("study_name") != study_name or row.get("stage") != "search":
            continue
        if row.get("trial_state") is None or row.get("trial_number") is None:
            continue
        by_trial[row["trial_number"]].append(row)
    trials = []
    for number, rows in sorted(by_trial.items()):
        objective = rows[0].get("trial_objective")
        if objective is None:
            values = [r["objective"] for r in rows if plots.finite(r.get("objective"))]
            objective = statistics.fmean(values) if values else None
        reasons = [r["status"] for r in rows if r.get("status") not in (None, "ok")]
        trials.append({
            "number": number,
            "objective": objective,
            "objective_se": rows[0].get("trial_objective_se"),
            "state": rows[0]["trial_state"].upper(),  # rows keep Optuna's state in lower case
            "reason": reasons[0] if reasons else None,
        })  # fmt: skip
    return trials


def problem_configs(
    runs: Sequence[dict[str, Any]], pid: str, recommended: frozenset[str] = frozenset()
) -> list[dict[str, Any]]:
    """Mean cost and relative error of each (method, configuration) on one problem, over
    its finished runs (search and validation); ``recommended``: the config ids to mark."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in runs:
        if row.get("pid") == pid and row.get("status") == "ok" and row.get("config_id"):
            groups[(row["method"], row["config_id"])].append(row)
    configs = []
    for (method, config_id), rows in sorted(groups.items()):
        costs = [r["full_grad_equiv"] for r in rows if r.get("full_grad_equiv") is not None]
        errors = [r["rel_error"] for r in rows if r.get("rel_error") is not None]
        if costs and errors:
            configs.append(
                {"method": method, "cost": statistics.fmean(costs),
                 "rel_error": statistics.fmean(errors),
                 "recommended": config_id in recommended}
            )  # fmt: skip
    return configs


def calibration_points(
    runs: Sequence[dict[str, Any]], leaderboard: Sequence[dict[str, Any]], method: str
) -> list[dict[str, Any]]:
    """For each problem, the validation runs' llc_hat of the method's recommendation."""
    points = []
    for board in leaderboard:
        if board["method"] != method or board.get("config_id") is None:
            continue
        if board.get("kind") == "recipe":
            continue  # (its problems' points would hide the per-problem recommendations)
        hats = [
            row["llc_hat"]
            for row in runs
            if row.get("stage") == "validation"
            and row.get("pid") == board["pid"]
            and row.get("method") == method
            and row.get("config_id") == board["config_id"]
            and row.get("llc_hat") is not None
        ]
        if hats:
            points.append(
                {"label": board["problem_name"], "llc_ref": board["llc_ref"],
                 "se_ref": board["se_ref"], "llc_hats": hats}
            )  # fmt: skip
    return points


# The parameter each method's slice plot is drawn against: the one that sets its scale.
SLICE_PARAMETER = {"sgld": "step_size", "psgld": "step_size", "mclmc": "desired_energy_var",
                   "vi": "learning_rate"}  # fmt: skip


def slice_points(
    runs: Sequence[dict[str, Any]], method: str, parameter: str
) -> list[dict[str, Any]]:
    """Every finished search run of a method: its problem, its value of ``parameter``
    and its relative error."""
    column = f"hp_{parameter}"
    return [
        {"problem": row.get("problem_name") or row["pid"], "value": row[column],
         "rel_error": row["rel_error"]}
        for row in runs
        if row.get("method") == method and row.get("stage") == "search"
        and row.get("status") == "ok" and plots.finite(row.get(column))
        and plots.finite(row.get("rel_error"))
    ]  # fmt: skip
