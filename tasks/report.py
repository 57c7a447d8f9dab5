"""The report as a Prefect task: plots and ``index.html`` from the campaign's records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from lambda_hat.io import read_json
from lambda_hat.results.campaign import recommended_traces
from lambda_hat.results.report import build_report
from lambda_hat.results.tables import read_rows


@task(name="build-report")
def build_report_task(
    artifacts_dir: str,
    runs_parquet: str | None,
    leaderboard: list[dict[str, Any]],
    references: list[dict[str, Any]],
    title: str,
    page_name: str = "index.html",
    metadata: dict[str, Any] | None = None,
) -> str:
    """Write ``<artifacts_dir>/report/<page_name>`` and its PNGs; returns the page's path.
    ``runs_parquet`` None: the references alone (the reference flow)."""
    problems = Path(artifacts_dir) / "problems"
    evidence = {}
    for ref in references:
        record = read_json(problems / ref["pid"] / "convergence.json")
        if isinstance(record, dict):
            evidence[ref["pid"]] = record
    runs = read_rows(Path(runs_parquet)) if runs_parquet else []
    traces = recommended_traces(Path(artifacts_dir), runs, leaderboard)
    page = build_report(
        Path(artifacts_dir) / "report", runs, leaderboard, references, evidence, title, page_name,
        metadata=metadata, traces=traces,
    )  # fmt: skip
    return str(page)
