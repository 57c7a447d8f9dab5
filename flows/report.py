"""The leaderboard (best trial per problem × method) and the markdown report."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState

from lambda_hat.tuning import engine_kwargs


def leaderboard_rows(
    storage_url: str, references: list[dict[str, Any]], methods: list[str]
) -> list[dict[str, Any]]:
    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs=engine_kwargs(storage_url))
    rows = []
    for ref in references:
        for method in methods:
            study = optuna.load_study(study_name=f"{ref['pid']}:{method}", storage=storage)
            told = [t for t in study.get_trials(deepcopy=False) if "status" in t.user_attrs]
            complete = [t for t in told if t.state == TrialState.COMPLETE]
            best = min(complete, key=lambda t: t.value) if complete else None
            llc = best.user_attrs.get("llc_hat") if best else None
            error = None if llc is None else abs(llc - ref["llc_ref"])
            rows.append(
                {
                    "problem": ref["name"],
                    "pid": ref["pid"],
                    "method": method,
                    "llc_ref": round(ref["llc_ref"], 4),
                    "best_llc_hat": None if llc is None else round(llc, 4),
                    "abs_error": None if error is None else round(error, 4),
                    "rel_error": None if error is None else round(error / abs(ref["llc_ref"]), 4),
                    "best_params": json.dumps(best.params, sort_keys=True) if best else "",
                    "trials_done": len(told),
                    "trials_failed": len(told) - len(complete),
                }
            )
    return rows


def report_markdown(
    rows: list[dict[str, Any]], references: list[dict[str, Any]], problems: str, seconds: float
) -> str:
    lines = [
        f"# lambda_hat tuning report: `{problems}`",
        "",
        f"{len(references)} problems, {len(rows)} studies, {seconds:.0f} s.",
        "",
        "| problem | method | llc_ref | best llc_hat | rel. error | trials (failed) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        rel = "–" if row["rel_error"] is None else f"{row['rel_error']:.1%}"
        best = "–" if row["best_llc_hat"] is None else f"{row['best_llc_hat']:.3f}"
        lines.append(
            f"| {row['problem']} | {row['method']} | {row['llc_ref']:.3f} | {best} | {rel} | "
            f"{row['trials_done']} ({row['trials_failed']}) |"
        )
    lines += ["", "## References", ""]
    for ref in references:
        theory = ref.get("lambda_theory")
        lines.append(
            f"- {ref['name']} (`{ref['pid']}`): {ref['llc_ref']:.3f} ± {ref['se_ref']:.3f}"
            + ("" if theory is None else f", λ = {theory:g}")
            + (" (cached)" if ref.get("cached") else "")
        )
    return "\n".join(lines) + "\n"
