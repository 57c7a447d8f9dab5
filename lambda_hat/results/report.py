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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lambda_hat.io import atomic_write_bytes
from lambda_hat.results import plots, summary
from lambda_hat.results.metadata import metadata_rows
from lambda_hat.results.plot_points import (
    SLICE_PARAMETER,
    calibration_points,
    problem_configs,
    slice_points,
    study_trials,
)

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #555; font-size: 0.9em; }
table.meta th { text-align: left; background: #f6f6f6; }
dt { font-weight: bold; margin-top: 0.4em; }
nav ul { columns: 2; }
"""


def _num(value: Any, digits: int = 3) -> str:
    return (
        "–"
        if not isinstance(value, int | float) or not math.isfinite(value)
        else (f"{value:.{digits}g}")
    )


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


GLOSSARY = [
    ("validated error", "mean |llc_hat − llc_ref| of the recommended configuration over fresh "
     "seeds it was not selected on, with its 95 % t interval (lower end clipped at 0): the "
     "error to expect when you use it"),
    ("search objective", "the best trial's mean |llc_hat − llc_ref| over its repeats, on the "
     "seeds it was selected on: biased low (the winner's curse), shown for comparison only"),
    ("relative", "the validated error divided by llc_ref"),
    ("bias", "mean llc_hat − llc_ref over the validation seeds, with its 95 % t interval; "
     "low or high where the interval excludes 0"),
    ("fails", f"a validated relative error above {100 * summary.FAIL_REL:.0f} %, or none"),
    ("★ best", "the method with the lowest validated error on a problem; methods whose "
     "interval overlaps its own are not distinguishable from it on these seeds"),
    ("quality", "the reference's verdict: trusted, or why not (R-hat, ESS, divergences, "
     "disagreement between chains or halves, or with the exact or theoretical value)"),
    ("transfer", "a recommendation run on held-out problems it was not tuned on, on fresh "
     "seeds: mean relative error over them"),
    ("recipe", "one configuration per method for a whole problem set; its error is the mean "
     "over problems of each problem's mean relative error"),
]  # fmt: skip


def _anchor(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _section(title: str, anchor: str | None = None) -> tuple[str, str]:
    """(an <h2> with an id, its table-of-contents entry)."""
    anchor = anchor or _anchor(title)
    heading = f'<h2 id="{anchor}">{html.escape(title)}</h2>'
    return heading, f'<li><a href="#{anchor}">{html.escape(title)}</a></li>'


def _answer_html(leaderboard: Sequence[dict[str, Any]], spaces: dict[str, Any]) -> list[str]:
    """Per method: the verdict, then each problem's recommended configuration (tuned and
    fixed values) with its validated error and bias."""
    parts = []
    best = summary.best_per_problem(leaderboard)
    for item in summary.method_summaries(leaderboard):
        fixed = (spaces.get(item.method) or {}).get("fixed") or {}
        rows = []
        for row in item.rows:
            mark = best.get(row["pid"])
            note = ""
            if mark is not None and mark.method == item.method:
                note = "★ best" + (f" (tied with {', '.join(mark.tied_with)})"
                                   if mark.tied_with else "")  # fmt: skip
            rows.append([
                row["problem_name"], summary.readable_config(summary.tuned_params(row), fixed),
                summary.validated_text(row), summary.percent(row.get("validated_rel_error_mean")),
                summary.bias_text(row), note,
            ])  # fmt: skip
        parts += [f"<h3>{html.escape(item.method)}</h3>",
                  f"<p><b>{html.escape(item.verdict)}</b></p>",
                  _table(["problem", "recommended configuration", "validated |error| [95 % CI]",
                          "relative", "bias [95 % CI]", ""], rows)]  # fmt: skip
    recipes = [row for row in leaderboard if row.get("kind") == "recipe"]
    if recipes:
        parts.append("<h3>recipes</h3>")
        parts.append(_table(
            ["set", "method", "configuration", "validated mean relative error", "transfer"],
            [[r["problem_name"], r["method"],
              summary.readable_config(summary.tuned_params(r),
                                      (spaces.get(r["method"]) or {}).get("fixed")),
              summary.validated_text(r), summary.transfer_text(r)] for r in recipes],
        ))  # fmt: skip
    return parts


def _metadata_html(metadata: dict[str, Any] | None) -> str:
    if not metadata:
        return '<p class="note">No run record (results/campaign.json) was found.</p>'
    rows = "".join(
        f"<tr><th>{html.escape(label)}</th><td>{html.escape(text)}</td></tr>"
        for label, text in metadata_rows(metadata)
    )
    return f'<table class="meta">{rows}</table>'


def _guide_link() -> str:
    guide = Path(__file__).resolve().parents[2] / "docs" / "user-guide.md"
    where = "docs/user-guide.md in the lambda_hat repository"
    if guide.exists():
        return f'<a href="{html.escape(guide.as_uri())}">{where}</a>'
    return where


def _problem_plots(
    out: Path,
    ref: dict[str, Any],
    runs: Sequence[dict[str, Any]],
    leaderboard: Sequence[dict[str, Any]],
    evidence: dict[str, dict[str, Any]],
    traces: dict[str, dict[str, Any]],
    methods: list[str],
) -> list[str]:
    """One problem's images: its reference's chains, error against cost, and per study
    its progress and its recommendation's validation trace."""
    name = ref.get("name", ref["pid"])
    parts = []
    if ref["pid"] in evidence:
        png = plots.reference_convergence(
            evidence[ref["pid"]], f"HMC reference: {name}", out / f"reference-{name}.png"
        )
        parts.append(_image(png, f"reference chains of {name}"))
    boards = [b for b in leaderboard if b["pid"] == ref["pid"]]
    chosen = frozenset(b["config_id"] for b in boards if b.get("config_id"))
    png = plots.error_vs_cost(
        problem_configs(runs, ref["pid"], chosen), f"error against cost: {name}",
        out / f"cost-{name}.png", methods,
    )  # fmt: skip
    parts.append(_image(png, f"error against cost on {name}"))
    for board in boards:
        png = plots.study_progress(
            study_trials(runs, board.get("study_name") or f"{ref['pid']}:{board['method']}"),
            _validated_band(board, "validated_error"),
            f"{name} · {board['method']}", out / f"study-{name}-{board['method']}.png",
        )  # fmt: skip
        parts.append(_image(png, f"study {name} {board['method']}"))
        trace = traces.get(board.get("study_name"))
        if trace:
            png = plots.method_trace(
                trace, ref["llc_ref"], ref["se_ref"],
                f"{name} · {board['method']}: the recommendation's chains, one validation run",
                out / f"trace-{name}-{board['method']}.png",
            )  # fmt: skip
            parts.append(_image(png, f"trace {name} {board['method']}"))
    return parts


def _across_problems(
    out: Path,
    runs: Sequence[dict[str, Any]],
    leaderboard: Sequence[dict[str, Any]],
    methods: list[str],
) -> tuple[list[str], list[str]]:
    """Per method: its calibration across problems, and its error against its step size."""
    calibration = [
        _image(plots.calibration(calibration_points(runs, leaderboard, method), method,
                                 out / f"calibration-{method}.png"), f"calibration of {method}")
        for method in methods
    ]  # fmt: skip
    slices = []
    for method in methods:
        parameter = SLICE_PARAMETER.get(method)
        points = slice_points(runs, method, parameter) if parameter else []
        if points:
            png = plots.error_vs_parameter(
                points, method, parameter, out / f"slice-{method}-{parameter}.png"
            )
            slices.append(_image(png, f"{method}: error against {parameter}"))
    return calibration, slices


def build_report(
    out_dir: Path | str,
    runs: Sequence[dict[str, Any]],
    leaderboard: Sequence[dict[str, Any]],
    references: Sequence[dict[str, Any]],
    evidence: dict[str, dict[str, Any]],
    title: str = "lambda_hat tuning report",
    page_name: str = "index.html",
    metadata: dict[str, Any] | None = None,
    traces: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Draw every plot into ``out_dir`` and write ``out_dir/<page_name>``; returns its path.
    ``evidence`` maps a pid to its reference's ``convergence.json``; ``metadata`` is the
    run's record (``lambda_hat.results.metadata``); ``traces`` maps a study to its
    recommendation's validation trace (``lambda_hat.results.campaign``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spaces = (metadata or {}).get("spaces") or {}
    methods = summary.method_order(leaderboard)
    body: list[str] = []
    toc: list[str] = []

    def section(title: str, *content: str, anchor: str | None = None) -> None:
        heading, entry = _section(title, anchor)
        body.extend([heading, *content])
        toc.append(entry)

    if leaderboard:
        section("The answer: which configuration, and how wrong", *_answer_html(
            leaderboard, spaces), anchor="answer")  # fmt: skip
        header, cells = summary.leaderboard_view(leaderboard)
        section("Leaderboard", _table(header, cells))
    if references:
        section("References", _references_html(references))
    recipe_parts = _recipes_html(out, runs, leaderboard)
    if recipe_parts:
        section("Recipe studies", *recipe_parts, anchor="recipes")
    best = summary.best_per_problem(leaderboard)
    for ref in references:
        name = ref.get("name", ref["pid"])
        mark = best.get(ref["pid"])
        lead = f"<p>Best: <b>{html.escape(mark.method)}</b>.</p>" if mark else ""
        parts = _problem_plots(out, ref, runs, leaderboard, evidence, traces or {}, methods)
        section(f"Problem {name} ({ref['pid']})", lead, *parts, anchor=f"problem-{name}")
    calibration, slices = _across_problems(out, runs, leaderboard, methods)
    if calibration:
        section("Calibration across problems", *calibration, anchor="calibration")
    if slices:
        section("Error against the step size, per problem", *slices, anchor="slices")
    section("Glossary", "<dl>" + "".join(
        f"<dt>{html.escape(term)}</dt><dd>{html.escape(text)}</dd>" for term, text in GLOSSARY
    ) + "</dl>")  # fmt: skip
    head = [
        f"<h1>{html.escape(title)}</h1>",
        _metadata_html(metadata),
        f"<nav><b>Contents</b><ul>{''.join(toc)}</ul></nav>",
        f'<p class="note">Every error is measured on fresh seeds the configuration was not '
        f"selected on, with its 95 % t interval; the search objective is shown beside it. "
        f"User guide: {_guide_link()}.</p>",
    ]
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(head + body)}</body></html>"
    )
    index = out / page_name
    atomic_write_bytes(index, page.encode("utf-8"))
    return index
