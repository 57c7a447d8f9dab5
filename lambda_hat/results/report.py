"""``artifacts/report/``: the plots as PNG files and ``index.html``, one self-contained page
(images embedded as data URIs, no script, no external URL) that opens offline.

Everything is derived from the records the campaign keeps: the rows of ``runs.parquet``,
the leaderboard rows, each reference's ``ref.json`` and ``convergence.json``.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp())
>>> page = build_report(out, runs=[], leaderboard=[], references=[], evidence={})
>>> page.name, "http" in page.read_text()
('index.html', False)
"""

from __future__ import annotations

import base64
import html
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lambda_hat.io import atomic_write_bytes
from lambda_hat.results import plots

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
"""


def _num(value: Any, digits: int = 3) -> str:
    return (
        "–"
        if not isinstance(value, int | float) or not math.isfinite(value)
        else (f"{value:.{digits}g}")
    )


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
        trials.append({
            "number": number,
            "objective": objective,
            "objective_se": rows[0].get("trial_objective_se"),
            "state": rows[0]["trial_state"].upper(),  # rows keep Optuna's state in lower case
        })  # fmt: skip
    return trials


def problem_configs(runs: Sequence[dict[str, Any]], pid: str) -> list[dict[str, Any]]:
    """Mean cost and relative error of each (method, configuration) on one problem, over
    its finished runs (search and validation)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in runs:
        if row.get("pid") == pid and row.get("status") == "ok" and row.get("config_id"):
            groups[(row["method"], row["config_id"])].append(row)
    configs = []
    for (method, _), rows in sorted(groups.items()):
        costs = [r["full_grad_equiv"] for r in rows if r.get("full_grad_equiv") is not None]
        errors = [r["rel_error"] for r in rows if r.get("rel_error") is not None]
        if costs and errors:
            configs.append(
                {"method": method, "cost": statistics.fmean(costs),
                 "rel_error": statistics.fmean(errors)}
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


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _interval(mean: Any, low: Any, high: Any, percent: bool = False) -> str:
    shown = (lambda v: "–" if v is None else f"{v:.1%}") if percent else _num
    return f"{shown(mean)} [{shown(low)}, {shown(high)}]"


def _validated(row: dict[str, Any]) -> str:
    if row.get("kind") == "recipe":
        if row.get("validated_rel_error_mean") is None:
            return "not validated"
        return (
            _interval(row["validated_rel_error_mean"], row["validated_rel_error_ci_low"],
                      row["validated_rel_error_ci_high"], percent=True)
            + f" relative over {row['n_problems']} problems (n={row['n_validation_runs']})"
        )  # fmt: skip
    if row.get("validated_error_mean") is None:
        return "not validated"
    return (
        _interval(row["validated_error_mean"], row["validated_error_ci_low"],
                  row["validated_error_ci_high"])
        + f" (n={row['n_validation_runs']})"
    )  # fmt: skip


def _transfer(row: dict[str, Any]) -> str:
    if row.get("transfer_rel_error_mean") is None:
        return "–"
    return _interval(
        row["transfer_rel_error_mean"], row["transfer_rel_error_ci_low"],
        row["transfer_rel_error_ci_high"], percent=True,
    ) + f" over {row['n_transfer_problems']} (n={row['n_transfer_runs']})"  # fmt: skip


def _leaderboard_html(leaderboard: Sequence[dict[str, Any]]) -> str:
    rows = []
    for row in leaderboard:
        rel = row.get("validated_rel_error_mean")
        reference = (
            "per problem" if row.get("kind") == "recipe"
            else f"{_num(row.get('llc_ref'))} ± {_num(row.get('se_ref'))}"
        )  # fmt: skip
        rows.append([
            row["problem_name"], row["method"], _validated(row),
            "–" if rel is None else f"{rel:.1%}", _transfer(row),
            f"{_num(row.get('search_objective'))} ± {_num(row.get('search_objective_se'))}",
            reference,
            f"{row.get('trials_done')}/{row.get('trials_pruned')}/{row.get('trials_failed')}",
            row.get("params_json") or "–",
        ])  # fmt: skip
    return _table(
        ["problem", "method", "validated error [95 % CI]", "relative",
         "transfer: held-out rel. error [95 % CI]", "search objective ± SE", "llc_ref ± SE",
         "trials done/pruned/failed", "configuration"],
        rows,
    )  # fmt: skip


def _validated_band(board: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    """A leaderboard row's validated error (``prefix``: absolute or relative) for the
    study plot's band, or None where it was not validated."""
    if board.get(f"{prefix}_mean") is None:
        return None
    return {"mean": board[f"{prefix}_mean"], "ci_low": board[f"{prefix}_ci_low"],
            "ci_high": board[f"{prefix}_ci_high"], "n": board["n_validation_runs"]}  # fmt: skip


def _recipes_html(
    out: Path, runs: Sequence[dict[str, Any]], leaderboard: Sequence[dict[str, Any]]
) -> list[str]:
    """Each recipe study's trials (mean relative error over the set) with its validated
    family error as a band."""
    parts = []
    for board in (b for b in leaderboard if b.get("kind") == "recipe"):
        validated = _validated_band(board, "validated_rel_error")
        label = f"{board['problem_name']}-{board['method']}"
        png = plots.study_progress(
            study_trials(runs, board["study_name"]), validated,
            f"{board['problem_name']} · {board['method']}", out / f"study-{label}.png",
            ylabel="mean relative error over problems (search objective)",
        )  # fmt: skip
        parts += [f"<h2>{html.escape(label)}</h2>", _image(png, f"recipe study {label}")]
    return parts


def _references_html(references: Sequence[dict[str, Any]]) -> str:
    rows = [
        [ref.get("name", ref["pid"]), ref["pid"], f"{_num(ref['llc_ref'])} ± {_num(ref['se_ref'])}",
         _num(ref.get("lambda_theory")), ref.get("quality", "–"),
         "; ".join(ref.get("quality_reasons") or []) or "–"]
        for ref in references
    ]  # fmt: skip
    return _table(["problem", "pid", "llc_ref ± SE", "λ (theory)", "quality", "reasons"], rows)


def build_report(
    out_dir: Path | str,
    runs: Sequence[dict[str, Any]],
    leaderboard: Sequence[dict[str, Any]],
    references: Sequence[dict[str, Any]],
    evidence: dict[str, dict[str, Any]],
    title: str = "lambda_hat tuning report",
    page_name: str = "index.html",
) -> Path:
    """Draw every plot into ``out_dir`` and write ``out_dir/<page_name>``; returns its path.
    ``evidence`` maps a pid to its reference's ``convergence.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>",
             '<p class="note">Every error is measured on fresh seeds the configuration was not '
             "selected on, with its 95 % t interval; the search objective is shown beside it."
             "</p>", "<h2>Leaderboard</h2>", _leaderboard_html(leaderboard),
             "<h2>References</h2>", _references_html(references)]  # fmt: skip
    parts += _recipes_html(out, runs, leaderboard)
    for ref in references:
        name = ref.get("name", ref["pid"])
        parts.append(f"<h2>{html.escape(name)} ({html.escape(ref['pid'])})</h2>")
        if ref["pid"] in evidence:
            png = plots.reference_convergence(
                evidence[ref["pid"]], f"HMC reference: {name}", out / f"reference-{name}.png"
            )
            parts.append(_image(png, f"reference chains of {name}"))
        png = plots.error_vs_cost(
            problem_configs(runs, ref["pid"]),
            f"error against cost: {name}",
            out / f"cost-{name}.png",
        )
        parts.append(_image(png, f"error against cost on {name}"))
        for board in (b for b in leaderboard if b["pid"] == ref["pid"]):
            study = f"{ref['pid']}:{board['method']}"
            validated = _validated_band(board, "validated_error")
            png = plots.study_progress(
                study_trials(runs, study), validated, f"{name} · {board['method']}",
                out / f"study-{name}-{board['method']}.png",
            )  # fmt: skip
            parts.append(_image(png, f"study {name} {board['method']}"))
    methods = sorted({b["method"] for b in leaderboard})
    if methods:
        parts.append("<h2>Calibration across problems</h2>")
    for method in methods:
        png = plots.calibration(
            calibration_points(runs, leaderboard, method), method, out / f"calibration-{method}.png"
        )  # fmt: skip
        parts.append(_image(png, f"calibration of {method}"))
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    index = out / page_name
    atomic_write_bytes(index, page.encode("utf-8"))
    return index
