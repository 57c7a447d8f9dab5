"""What the tune flow writes for every finished run: its ``runs.parquet`` row and the
``row.json`` copy beside its ``metrics.json`` (from which a corrupt Parquet file is
rebuilt). A search run's row gets its trial's figures once the trial is told."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from lambda_hat.io import atomic_write_json, disk_full
from lambda_hat.results.tables import append_rows
from lambda_hat.settings import Settings
from lambda_hat.tuning.kinds import Member, StudyKind, member_of
from lambda_hat.tuning.trials import Outcome, RunOutcome

log = logging.getLogger(__name__)


def run_row(run: RunOutcome, context: dict[str, Any]) -> dict[str, Any]:
    result, plan = run.result, run.plan
    return {
        **result,
        **context,
        "run_id": plan.run_id,
        "stage": plan.stage,
        "trial_number": plan.trial_number,
        "repeat": plan.repeat,
        "config_id": plan.config_id,
        "status": result.get("status"),
        "error": run.reason or result.get("error"),
        "objective": run.objective,
        "abs_error": run.abs_error,
        "rel_error": None if run.abs_error is None else run.abs_error / abs(context["llc_ref"]),
        "hyperparams": plan.hyperparams,
        "seed": plan.seed,
        "budget_sec": plan.budget_sec,
    }


def trial_fields(outcome: Outcome, kind: StudyKind, members: list[Member]) -> dict[str, Any]:
    """The told trial's state and figures, for each of its runs' rows."""
    summary = kind.summarize(outcome.runs, members)
    return {
        "trial_state": outcome.state.name.lower(),
        "trial_objective": outcome.objective,
        "trial_objective_se": summary["objective_se"],
        **summary["row"],
    }


def recorder(settings: Settings, members: list[Member], context: dict[str, Any]):
    """``record(*runs, extra=None)``: the runs' rows (each with its own problem's name and
    reference, and the ``extra`` columns) written as one part of ``runs.parquet``."""
    parquet = settings.results_dir.resolve() / "runs.parquet"
    runs_dir = settings.artifacts_dir.resolve() / "runs"

    def row(run: RunOutcome) -> dict[str, Any]:
        member = member_of(members, run.plan.pid)
        problem = {"pid": member.pid, "problem_name": member.name,
                   "llc_ref": member.llc_ref, "se_ref": member.se_ref}  # fmt: skip
        return run_row(run, {**context, **problem})

    def record(*runs: RunOutcome, extra: dict[str, Any] | None = None) -> None:
        write_rows([{**row(run), **(extra or {})} for run in runs], parquet, runs_dir)

    return record


def write_rows(rows: list[dict[str, Any]], parquet: Path, runs_dir: Path) -> None:
    """Each row's row.json, then a part of ``runs.parquet`` (both atomic, O(1) per run).

    A full disk stops the run (in one line naming the path; the files already there are
    whole, the RUNNING trials are picked up by the next run). Any other failure to write
    is a warning, never the end of a study: the trial is told all the same, and the rows
    are written with the next ones (or rebuilt from the row.json files)."""
    try:
        for row in rows:
            path = runs_dir / row["pid"] / row["method"] / row["run_id"] / "row.json"
            atomic_write_json(path, row)
        append_rows(parquet, rows)
    except OSError as error:
        full = disk_full(error, parquet.parent)
        if full is not None:
            raise full from None
        _warn_unwritten(rows, parquet, error)
    except (pa.ArrowException, TypeError, ValueError) as error:
        _warn_unwritten(rows, parquet, error)


def _warn_unwritten(rows: list[dict[str, Any]], parquet: Path, error: Exception) -> None:
    ids = ", ".join(row["run_id"] for row in rows)
    log.warning("%s: rows of %s not written (%s); the study goes on", parquet, ids, error)
