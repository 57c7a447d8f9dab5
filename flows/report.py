"""The leaderboard (one recommended configuration per study, with its validated error) and
the markdown report. Every error shown is measured on fresh seeds the configuration was
not selected on, with its 95 % interval; the search objective is shown beside it so the
optimism of the search is visible."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def validated_text(row: dict[str, Any]) -> str:
    """``0.123 [0.080, 0.166] (n=8)`` (a recipe: its mean relative error over problems),
    or why there is no validated figure."""
    if row.get("kind") == "recipe":
        if row["validated_rel_error_mean"] is None:
            return "not validated"
        return (
            f"{_pct(row['validated_rel_error_mean'])} [{_pct(row['validated_rel_error_ci_low'])}, "
            f"{_pct(row['validated_rel_error_ci_high'])}] relative, {row['n_problems']} "
            f"problems (n={row['n_validation_runs']})"
        )
    if row["validated_error_mean"] is None:
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
    return (
        f"{_pct(row['transfer_rel_error_mean'])} [{_pct(row['transfer_rel_error_ci_low'])}, "
        f"{_pct(row['transfer_rel_error_ci_high'])}] over {row['n_transfer_problems']} "
        f"held-out problems (n={row['n_transfer_runs']}{failed})"
    )


def leaderboard_line(row: dict[str, Any]) -> str:
    """One terminal/log line per study."""
    head = f"{row['problem_name']} {row['method']}: "
    if row["search_objective"] is None:
        return head + "no completed trial"
    if row["validated_error_mean"] is None and row["validated_rel_error_mean"] is None:
        return head + (
            f"search objective {_num(row['search_objective'])} (not validated); "
            f"params {row['params_json']}"
        )
    held_out = "" if row.get("n_transfer_runs") is None else f", transfer {transfer_text(row)}"
    return head + (
        f"validated error {validated_text(row)}{held_out}, search objective "
        f"{_num(row['search_objective'])}; params {row['params_json']}"
    )


def leaderboard_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``leaderboard`` table artifact: readable columns, the pid beside the name."""
    return [
        {
            "problem": row["problem_name"],
            "pid": row["pid"],
            "method": row["method"],
            "llc_ref": (
                "per problem"
                if row.get("kind") == "recipe"
                else f"{_num(row['llc_ref'])} ± {_num(row['se_ref'])}"
            ),
            "validated |error| [95% CI]": validated_text(row),
            "validated rel. error": _pct(row["validated_rel_error_mean"]),
            "transfer rel. error [95% CI]": transfer_text(row),
            "validated bias": _num(row["validated_bias"]),
            "validated sd": _num(row["validated_sd"]),
            "search objective": _num(row["search_objective"]),
            "params": row["params_json"] or "",
            "trials (pruned, failed)": (
                f"{row['trials_done']} ({row['trials_pruned']}, {row['trials_failed']})"
            ),
        }
        for row in rows
    ]


def report_markdown(
    rows: list[dict[str, Any]], references: list[dict[str, Any]], problems: str, seconds: float
) -> str:
    lines = [
        f"# lambda_hat tuning report: `{problems}`",
        "",
        f"{len(references)} problems, {len(rows)} studies, {seconds:.0f} s.",
        "",
        "Validated error: mean |llc_hat − llc_ref| of the recommended configuration over fresh "
        "seeds it was not selected on, with its 95 % t interval. The search objective (the "
        "best trial's mean over its repeats) is shown beside it: it is biased low.",
        "",
        "A recipe row (`recipe-<set>`) is one configuration for every problem of the set: its "
        "validated error is the mean over problems of each problem's mean relative error. "
        "Transfer: the recommended configuration on the held-out problems (`--holdout`), on "
        "fresh seeds, mean relative error over them.",
        "",
        "| problem | method | llc_ref | validated error [95 % CI] | rel. | transfer (held out) "
        "| bias | search obj. | trials (pruned, failed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['problem_name']} | {row['method']} | {_num(row.get('llc_ref'))} | "
            f"{validated_text(row)} | {_pct(row['validated_rel_error_mean'])} | "
            f"{transfer_text(row)} | {_num(row.get('validated_bias'))} | "
            f"{_num(row['search_objective'])} | "
            f"{row['trials_done']} ({row['trials_pruned']}, {row['trials_failed']}) |"
        )
    lines += ["", "## References", ""]
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
    """The report section of the ``tune-report`` artifact: where the page and its PNGs are
    (the Prefect UI cannot show local images; the page opens offline in any browser)."""
    folder = Path(index_html).parent
    pngs = sorted(path.name for path in folder.glob("*.png"))
    lines = ["", "## Plots", "", f"Open `{index_html}` in a browser (self-contained, offline).", ""]
    lines += [f"- [`{name}`]({(folder / name).as_uri()})" for name in pngs]
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
