"""Where a run's results go: the directories and the Optuna storage checked before any
work (``prepare_outputs``), and the results published once the studies are done
(``publish``): runs.parquet compacted, the leaderboard as Parquet and artifact, the run's
record and the report page."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.report import (
    build_leaderboard,
    leaderboard_line,
    leaderboard_table,
    plots_markdown,
    report_markdown,
)
from lambda_hat.io import check_writable
from lambda_hat.results.metadata import save_run
from lambda_hat.results.tables import compact, write_leaderboard
from lambda_hat.settings import Settings
from lambda_hat.tuning.storage import StorageRetry, check_storage, init_storage
from lambda_hat.tuning.validation import StudyResult
from tasks.report import build_report_task


def prepare_outputs(settings: Settings) -> None:
    """The results and artifacts directories writable and the Optuna storage reachable,
    with its tables, before any reference is computed."""
    check_writable(settings.results_dir, "results_dir")
    check_writable(settings.artifacts_dir, "artifacts_dir")
    settings.results_dir.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    check_storage(settings.storage_url())
    retry = StorageRetry(settings.budgets.storage_retry_sec)
    retry("creating the storage", init_storage, settings.storage_url())


def publish(
    studies: list[StudyResult],
    transfer_rows: list[dict[str, Any]],
    references: list[dict[str, Any]],
    settings: Settings,
    problems: str,
    methods: list[str],
    seconds: float,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """runs.parquet compacted, the leaderboard (Parquet and artifact), the run's record
    (``results/campaign.json``), the report page."""
    results = settings.results_dir.resolve()
    if not studies:
        return {"leaderboard": [], "report": None}
    # The runs' part files into one runs.parquet (rebuilt from row.json if it is corrupt).
    compact(results / "runs.parquet", rebuild_from=settings.artifacts_dir.resolve() / "runs")
    rows = build_leaderboard(studies, transfer_rows)
    write_leaderboard(results / "leaderboard.parquet", rows)
    save_run(results, metadata)
    create_table_artifact(
        key="leaderboard",
        table=leaderboard_table(rows),
        description="recommended configuration per study: validated error on fresh seeds "
        "(mean and 95 % interval) beside its search objective",
    )
    report = build_report_task(
        str(settings.artifacts_dir.resolve()), str(results / "runs.parquet"), rows, references,
        title=f"lambda_hat: {', '.join(methods)} on {problems}", metadata=metadata,
    )  # fmt: skip
    create_markdown_artifact(
        key="tune-report",
        markdown=report_markdown(rows, references, problems, seconds) + plots_markdown(report),
        description=f"tuning report for {problems}: leaderboard, references, plots",
    )
    logger = get_run_logger()
    for row in rows:
        logger.info("%s", leaderboard_line(row))
    return {"leaderboard": rows, "report": report}
