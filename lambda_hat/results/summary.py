"""The answer a researcher asks a campaign for: which configuration to use for each method,
and how wrong it will be. One formatting of the leaderboard for every place that shows it
(the report, ``python -m lambda_hat leaderboard``, the Prefect table artifact, the log).

Pure functions of leaderboard rows (``lambda_hat.results.tables.LEADERBOARD_COLUMNS``).

>>> rows = [
...     {"kind": "problem", "pid": "p_a", "problem_name": "a", "method": "sgld",
...      "validated_error_mean": 0.3, "validated_error_ci_low": 0.2,
...      "validated_error_ci_high": 0.4, "validated_rel_error_mean": 0.05,
...      "validated_bias": -0.3, "validated_sd": 0.05, "n_validation_runs": 5},
...     {"kind": "problem", "pid": "p_a", "problem_name": "a", "method": "vi",
...      "validated_error_mean": 2.0, "validated_error_ci_low": 1.8,
...      "validated_error_ci_high": 2.2, "validated_rel_error_mean": 0.33,
...      "validated_bias": 2.0, "validated_sd": 0.2, "n_validation_runs": 5},
... ]
>>> for summary in method_summaries(rows):
...     print(summary.verdict)
sgld: 5.0 % relative error on 1 problem; always low; within 10 % on all
vi: 33.0 % relative error on 1 problem; always high; fails (> 10 %) on 1 of 1
>>> best_per_problem(rows)["p_a"].method
'sgld'
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# A recommendation "fails" a problem when its validated relative error is above this, or
# when it has no validated error at all (every trial failed, or validation was off).
FAIL_REL = 0.10


def sig3(value: Any) -> str:
    """A number to 3 significant figures (integers as they are), anything else as text.

    >>> sig3(5.627932047415171e-05), sig3(0.26444745987645224), sig3(64), sig3("fullrank")
    ('5.63e-05', '0.264', '64', 'fullrank')
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def _num(value: Any, digits: int = 3) -> str:
    finite = isinstance(value, int | float) and math.isfinite(value)
    return f"{value:.{digits}f}" if finite else "–"


def percent(value: Any) -> str:
    finite = isinstance(value, int | float) and math.isfinite(value)
    return f"{value:.1%}" if finite else "–"


def readable_config(tuned: dict[str, Any], fixed: dict[str, Any] | None = None) -> str:
    """``tuned: step_size 5.63e-05, batch_size 64; fixed: num_steps 3000``.

    >>> readable_config({"step_size": 5.627932047415171e-05}, {"num_chains": 4})
    'tuned: step_size 5.63e-05; fixed: num_chains 4'
    """
    parts = []
    if tuned:
        parts.append("tuned: " + ", ".join(f"{k} {sig3(v)}" for k, v in tuned.items()))
    if fixed:
        parts.append("fixed: " + ", ".join(f"{k} {sig3(v)}" for k, v in fixed.items()))
    return "; ".join(parts) or "–"


def tuned_params(row: dict[str, Any]) -> dict[str, Any]:
    """The recommended configuration's tuned values ({} when there is none)."""
    return json.loads(row["params_json"]) if row.get("params_json") else {}


def validated_text(row: dict[str, Any]) -> str:
    """``0.123 [0.080, 0.166] (n=8)`` (a recipe: its mean relative error over problems),
    or why there is no validated figure."""
    if row.get("kind") == "recipe":
        if row.get("validated_rel_error_mean") is None:
            return "not validated"
        low, high = row["validated_rel_error_ci_low"], row["validated_rel_error_ci_high"]
        return (
            f"{percent(row['validated_rel_error_mean'])} [{percent(low)}, {percent(high)}] "
            f"relative, {row['n_problems']} problems (n={row['n_validation_runs']})"
        )
    if row.get("validated_error_mean") is None:
        return "not validated"
    return (
        f"{_num(row['validated_error_mean'])} [{_num(row['validated_error_ci_low'])}, "
        f"{_num(row['validated_error_ci_high'])}] (n={row['n_validation_runs']})"
    )


def transfer_text(row: dict[str, Any]) -> str:
    """The held-out problems' mean relative error with its 95 % interval, or ``–``."""
    if row.get("transfer_rel_error_mean") is None:
        failed = row.get("n_transfer_failed")
        return f"all {failed} runs failed" if failed else "–"
    failed = f", {row['n_transfer_failed']} failed" if row.get("n_transfer_failed") else ""
    low, high = row["transfer_rel_error_ci_low"], row["transfer_rel_error_ci_high"]
    return (
        f"{percent(row['transfer_rel_error_mean'])} [{percent(low)}, {percent(high)}] "
        f"over {row['n_transfer_problems']} "
        f"held-out problems (n={row['n_transfer_runs']}{failed})"
    )


def bias_interval(row: dict[str, Any], level: float = 0.95) -> tuple[float, float] | None:
    """The validated bias (mean llc_hat − llc_ref) with its t interval, from the row's
    bias, sd and run count; None where it cannot be formed."""
    bias, sd, n = row.get("validated_bias"), row.get("validated_sd"), row.get("n_validation_runs")
    if bias is None or sd is None or not n or n < 2:
        return None
    from lambda_hat.tuning.stats import t_quantile

    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return bias - half, bias + half


def _direction(interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "unbiased"
    return "low" if interval[1] < 0 else "high" if interval[0] > 0 else "unbiased"


def bias_text(row: dict[str, Any]) -> str:
    """``-0.531 [-0.763, -0.300] (low)``: the bias, its 95 % interval and its sign where
    the interval excludes 0."""
    interval = bias_interval(row)
    if interval is None:
        return _num(row.get("validated_bias"))
    direction = _direction(interval)
    sign = "no clear bias" if direction == "unbiased" else direction
    return f"{_num(row['validated_bias'])} [{_num(interval[0])}, {_num(interval[1])}] ({sign})"


def bias_direction(row: dict[str, Any]) -> str:
    """``low``/``high`` where the bias's 95 % interval excludes 0, else ``unbiased``."""
    return _direction(bias_interval(row))


def failed(row: dict[str, Any]) -> bool:
    rel = row.get("validated_rel_error_mean")
    return rel is None or not math.isfinite(rel) or rel > FAIL_REL


@dataclass(frozen=True)
class MethodSummary:
    """One method across the campaign's problems."""

    method: str
    rows: tuple[dict[str, Any], ...]
    verdict: str


def method_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The methods in the order the leaderboard lists them (the run's ``--methods``)."""
    return list(dict.fromkeys(row["method"] for row in rows))


def _bias_phrase(rows: Sequence[dict[str, Any]]) -> str:
    directions = [bias_direction(row) for row in rows]
    low, high, total = directions.count("low"), directions.count("high"), len(rows)
    if low == total:
        return "always low"
    if high == total:
        return "always high"
    if not low and not high:
        return "no clear bias"
    return ", ".join(
        f"{word} on {count} of {total}" for word, count in (("low", low), ("high", high)) if count
    )


def method_summaries(rows: Sequence[dict[str, Any]]) -> list[MethodSummary]:
    """Per method, over its per-problem studies: the range of validated relative errors,
    the sign of the bias where it is clear, and on how many problems it fails."""
    summaries = []
    problem_rows = [row for row in rows if row.get("kind") != "recipe"]
    for method in method_order(problem_rows):
        mine = [row for row in problem_rows if row["method"] == method]
        rels = [
            row["validated_rel_error_mean"]
            for row in mine
            if isinstance(row.get("validated_rel_error_mean"), int | float)
            and math.isfinite(row["validated_rel_error_mean"])
        ]
        n = len(mine)
        if rels:
            low, high = 100 * min(rels), 100 * max(rels)
            span = f"{low:.1f} %" if len(rels) == 1 else f"{low:.1f}–{high:.1f} %"
            what = f"{span} relative error on {n} problem{'s' if n > 1 else ''}"
        else:
            what = f"not validated on any of {n} problems"
        fails = sum(failed(row) for row in mine)
        fail_phrase = (
            f"within {100 * FAIL_REL:.0f} % on all" if not fails
            else f"fails (> {100 * FAIL_REL:.0f} %) on {fails} of {n}"
        )  # fmt: skip
        verdict = f"{method}: {what}; {_bias_phrase(mine)}; {fail_phrase}"
        summaries.append(MethodSummary(method, tuple(mine), verdict))
    return summaries


@dataclass(frozen=True)
class Best:
    """The method with the lowest validated error on a problem, and the methods whose 95 %
    interval overlaps its own (not distinguishable from it on these seeds)."""

    method: str
    tied_with: tuple[str, ...]


def best_per_problem(rows: Sequence[dict[str, Any]]) -> dict[str, Best]:
    """For each problem (pid), its best validated method."""
    by_pid: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row.get("kind") != "recipe" and row.get("validated_error_mean") is not None:
            by_pid.setdefault(row["pid"], []).append(row)
    best = {}
    for pid, mine in by_pid.items():
        winner = min(mine, key=lambda row: row["validated_error_mean"])
        top = winner.get("validated_error_ci_high")
        tied = tuple(
            row["method"]
            for row in mine
            if row is not winner
            and top is not None
            and row.get("validated_error_ci_low") is not None
            and row["validated_error_ci_low"] <= top
        )
        best[pid] = Best(winner["method"], tied)
    return best


LEADERBOARD_HEADER = (
    "problem", "pid", "method", "llc_ref ± SE", "validated |error| [95 % CI]", "relative",
    "bias [95 % CI]", "transfer: held-out rel. error [95 % CI]", "search objective ± SE",
    "trials done (pruned, failed)", "configuration",
)  # fmt: skip


def leaderboard_cells(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    """The leaderboard as every view shows it: one list of cells per study, in
    ``LEADERBOARD_HEADER``'s order, the best method of each problem marked ★."""
    best = best_per_problem(rows)
    cells = []
    for row in rows:
        mark = best.get(row["pid"])
        star = " ★" if mark is not None and mark.method == row["method"] else ""
        reference = (
            "per problem" if row.get("kind") == "recipe"
            else f"{_num(row.get('llc_ref'))} ± {_num(row.get('se_ref'))}"
        )  # fmt: skip
        cells.append([
            row["problem_name"], row["pid"], row["method"] + star, reference, validated_text(row),
            percent(row.get("validated_rel_error_mean")), bias_text(row), transfer_text(row),
            f"{_num(row.get('search_objective'))} ± {_num(row.get('search_objective_se'))}",
            f"{row.get('trials_done')} ({row.get('trials_pruned')}, {row.get('trials_failed')})",
            readable_config(tuned_params(row)),
        ])  # fmt: skip
    return cells


def text_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Aligned plain-text columns for a terminal.

    >>> print(text_table(["a", "bb"], [["xyz", "1"]]))
    a    bb
    xyz  1
    """
    widths = [max(len(str(h)), *(len(str(r[i])) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for row in cells:
        cols = zip(row, widths, strict=True)
        lines.append("  ".join(str(c).ljust(w) for c, w in cols).rstrip())
    return "\n".join(lines)


def markdown_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in a cell escaped)."""

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, cells)])


def leaderboard_view(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """``LEADERBOARD_HEADER`` and ``leaderboard_cells``, without the transfer column when
    no study was run on held-out problems."""
    header, cells = list(LEADERBOARD_HEADER), leaderboard_cells(rows)
    if not any(row.get("n_transfer_runs") for row in rows):
        drop = header.index("transfer: held-out rel. error [95 % CI]")
        header.pop(drop)
        for row in cells:
            row.pop(drop)
    return header, cells
