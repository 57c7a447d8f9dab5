"""The leaderboard (one recommended configuration per study, with its validated error) and
the markdown report. Every error shown is measured on fresh seeds the configuration was
not selected on, with its 95 % interval; the search objective is shown beside it so the
optimism of the search is visible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lambda_hat.results import summary
from lambda_hat.results.tables import LEADERBOARD_COLUMNS
from lambda_hat.tuning.recipe_file import write_recipe
from lambda_hat.tuning.recipes import recommended_config, transfer_fields
from lambda_hat.tuning.search_space import MethodSpace
from lambda_hat.tuning.validation import StudyResult


def build_leaderboard(
    studies: list[StudyResult], transfer_rows: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """One row per study: the row each study built from its validation runs, with the
    transfer figures of its recommendation on held-out problems (``transfer_rows``, each
    with its source ``study_name``) beside it. Nothing is read back from disk."""
    rows = []
    for study in studies:
        row = dict(study.leaderboard_row)
        held_out = [
            r
            for r in transfer_rows or []
            if r["study_name"] == study.study_name and r["config_id"] == row["config_id"]
        ]
        if held_out:
            row.update(transfer_fields(held_out))
        rows.append({**dict.fromkeys(LEADERBOARD_COLUMNS), **row})  # (every column, null or not)
    return rows


def leaderboard_line(row: dict[str, Any]) -> str:
    """One terminal/log line per study."""
    head = f"{row['problem_name']} {row['method']}: "
    if row["search_objective"] is None:
        return head + "no completed trial"
    params = summary.readable_config(summary.tuned_params(row))
    if row["validated_error_mean"] is None and row["validated_rel_error_mean"] is None:
        return head + (f"search objective {row['search_objective']:.3f} (not validated); {params}")
    held_out = (
        "" if row.get("n_transfer_runs") is None
        else f", transfer {summary.transfer_text(row)}"
    )  # fmt: skip
    return head + (
        f"validated error {summary.validated_text(row)}{held_out}, search objective "
        f"{row['search_objective']:.3f}; {params}"
    )


def leaderboard_table(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The ``leaderboard`` table artifact: the report's columns and cells."""
    header, cells = summary.leaderboard_view(rows)
    return [dict(zip(header, row, strict=True)) for row in cells]


def report_markdown(
    rows: list[dict[str, Any]], references: list[dict[str, Any]], problems: str, seconds: float
) -> str:
    """The ``tune-report`` artifact: each method's verdict, the leaderboard (the report's
    columns), the references."""
    header, cells = summary.leaderboard_view(rows)
    lines = [
        f"# lambda_hat tuning report: `{problems}`",
        "",
        f"{len(references)} problems, {len(rows)} studies, {seconds:.0f} s.",
        "",
        *[f"- **{item.verdict}**" for item in summary.method_summaries(rows)],
        "",
        "Validated error: mean |llc_hat − llc_ref| of the recommended configuration over fresh "
        "seeds it was not selected on, with its 95 % t interval; ★ the best method of a "
        "problem. The search objective (the best trial's mean over its repeats) is biased "
        "low. A recipe row (`recipe-<set>`) is one configuration for every problem of the set.",
        "",
        summary.markdown_table(header, cells),
        "",
        "## References",
        "",
    ]
    for ref in references:
        theory = ref.get("lambda_theory")
        lines.append(
            f"- {ref['name']} (`{ref['pid']}`): {ref['llc_ref']:.3f} ± {ref['se_ref']:.3f}"
            + ("" if theory is None else f", λ = {theory:g}")
            + f", quality **{ref.get('quality', 'not judged')}**"
            + (f" ({'; '.join(ref['quality_reasons'])})" if ref.get("quality_reasons") else "")
            + (" (cached)" if ref.get("cached") else "")
        )
    return "\n".join(lines) + "\n"


def plots_markdown(index_html: str) -> str:
    """The report section of the ``tune-report`` artifact: where the page and its PNGs are,
    relative to the artifacts directory (the Prefect UI cannot show local images, and a
    ``file://`` link or an absolute path means nothing on another machine)."""
    folder = Path(index_html).parent
    pngs = sorted(path.name for path in folder.glob("*.png"))
    lines = [
        "", "## Plots", "",
        f"Open `{folder.name}/{Path(index_html).name}` under the artifacts directory "
        "(`LAMBDA_HAT_ARTIFACTS_DIR`, default `artifacts/`) in a browser: one self-contained "
        f"page that opens offline, or rebuild it with `python -m lambda_hat report`. "
        f"{len(pngs)} PNGs beside it: " + ", ".join(f"`{name}`" for name in pngs) + ".",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_recipes(
    leaderboard: list[dict[str, Any]],
    studies: list[StudyResult],
    spaces: dict[str, MethodSpace],
    out_dir: Path,
    holdout: str | None,
) -> list[str]:
    """``<out_dir>/<set>-<method>.yaml`` for every recipe row with a recommendation."""
    members = {study.study_name: study.members for study in studies}
    paths = []
    for row in leaderboard:
        if row.get("kind") != "recipe" or row["config_id"] is None:
            continue
        config = recommended_config(row, spaces)
        set_name = row["problem_name"].removeprefix("recipe-")
        path = write_recipe(
            out_dir / f"{set_name}-{row['method']}.yaml", row, config,
            tuned_on=[m.name for m in members[row["study_name"]]], holdout=holdout,
        )  # fmt: skip
        paths.append(str(path))
    return paths
