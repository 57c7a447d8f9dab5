"""``runs.parquet``: one row per finished run, flat columns, deduplicated by run_id.

Writers take a file lock (``runs.parquet.lock``), read what is there, merge, and replace the
file atomically (temp file + rename), so two flows appending at once lose no rows and a
reader never sees half a file. Hyperparameters appear twice: as ``hp_<name>`` columns
(for filtering) and as one JSON column (``hyperparams_json``, exact).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.parquet"
>>> append_rows(path, [{"run_id": "r_1", "objective": 0.5, "hyperparams": {"step_size": 1e-4}}])
1
>>> append_rows(path, [{"run_id": "r_1", "objective": 0.4, "hyperparams": {"step_size": 1e-4}}])
1
>>> [(row["run_id"], row["objective"], row["hp_step_size"]) for row in read_rows(path)]
[('r_1', 0.4, 0.0001)]
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from lambda_hat.io import atomic_write_bytes, read_json

log = logging.getLogger(__name__)

# The documented schema (docs/user-guide.md, "Outputs"); hp_<name> columns come on top.
COLUMNS: dict[str, pa.DataType] = {
    "run_id": pa.string(),
    "study_name": pa.string(),
    "stage": pa.string(),
    "trial_number": pa.int64(),
    "repeat": pa.int64(),
    "config_id": pa.string(),
    # The trial a search run belongs to, once it is told (null before, and for validation)
    "trial_state": pa.string(),
    "trial_objective": pa.float64(),
    "trial_objective_se": pa.float64(),
    "trial_llc_mean": pa.float64(),
    "trial_llc_sd": pa.float64(),
    "trial_bias": pa.float64(),
    "pid": pa.string(),
    "problem_name": pa.string(),
    "method": pa.string(),
    "status": pa.string(),
    "objective": pa.float64(),
    "objective_kind": pa.string(),
    "llc_hat": pa.float64(),
    "se_hat": pa.float64(),
    "llc_ref": pa.float64(),
    "se_ref": pa.float64(),
    "abs_error": pa.float64(),
    "rel_error": pa.float64(),
    "runtime_sec": pa.float64(),
    "grad_evals": pa.int64(),
    "full_grad_equiv": pa.float64(),
    "n_draws": pa.int64(),
    "seed": pa.int64(),
    "budget_sec": pa.float64(),
    "error": pa.string(),
    "hyperparams_json": pa.string(),
    "code_version": pa.string(),
    "started_at": pa.float64(),
    "finished_at": pa.float64(),
    "hostname": pa.string(),
    "worker_pid": pa.int64(),
    "slurm_job_id": pa.string(),
    "slurm_job_name": pa.string(),
    "flow_run_id": pa.string(),
}


def flatten_row(row: dict[str, Any]) -> dict[str, Any]:
    """A run record → a flat row: ``hyperparams`` becomes hp_* columns plus JSON."""
    flat = {name: row.get(name) for name in COLUMNS}
    hyperparams = row.get("hyperparams") or {}
    flat["hyperparams_json"] = json.dumps(hyperparams, sort_keys=True)
    for name, value in hyperparams.items():
        flat[f"hp_{name}"] = value
    return flat


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    names = list(COLUMNS) + sorted({k for row in rows for k in row if k not in COLUMNS})
    arrays = {}
    for name in names:
        values = [row.get(name) for row in rows]
        arrays[name] = pa.array(values, type=COLUMNS.get(name))
    return pa.table(arrays)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows, or [] when the file does not exist.

    The file is read into memory with one ``open``: pyarrow given a path opens it more than
    once (footer, then pages), and a writer's rename in between made it read one file's
    footer against another's pages ("Couldn't deserialize thrift")."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return pq.read_table(pa.BufferReader(data)).to_pylist()


def run_records(runs_dir: Path) -> list[dict[str, Any]]:
    """The per-run copies of the rows (``<runs_dir>/<pid>/<method>/<run_id>/row.json``,
    written beside each run's ``metrics.json``); unreadable ones are skipped."""
    records = [read_json(path) for path in sorted(Path(runs_dir).glob("*/*/*/row.json"))]
    return [record for record in records if isinstance(record, dict) and "run_id" in record]


def _existing_rows(path: Path, rebuild_from: Path | None) -> list[dict[str, Any]]:
    """The file's rows; a file that cannot be read is moved aside (never deleted) and the
    rows are rebuilt from the per-run records, with a warning."""
    try:
        return read_rows(path)
    except (pa.ArrowException, OSError) as error:
        if rebuild_from is None:
            raise
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        rows = [flatten_row(record) for record in run_records(rebuild_from)]
        log.warning(
            "%s was unreadable (%s): moved to %s and rebuilt %d rows from %s/*/*/*/row.json",
            path,
            str(error).splitlines()[0],
            aside.name,
            len(rows),
            rebuild_from,
        )
        return rows


def append_rows(
    path: Path, records: Iterable[dict[str, Any]], rebuild_from: Path | None = None
) -> int:
    """Merge run records into the file (a record with a known run_id replaces the old
    row) and return how many rows the file now has. With ``rebuild_from`` (the runs
    directory), a corrupt file is rebuilt from the per-run records instead of failing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = [flatten_row(record) for record in records]
    with FileLock(str(path) + ".lock", timeout=120):
        by_id = {row["run_id"]: row for row in _existing_rows(path, rebuild_from)}
        for row in new:
            by_id[row["run_id"]] = row
        rows = list(by_id.values())
        buffer = io.BytesIO()
        pq.write_table(_table(rows), buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return len(rows)


# leaderboard.parquet: one row per (problem, method) study; see lambda_hat.validation.
LEADERBOARD_COLUMNS: dict[str, pa.DataType] = {
    "problem_name": pa.string(),
    "pid": pa.string(),
    "method": pa.string(),
    "config_id": pa.string(),
    "params_json": pa.string(),
    "search_trial_number": pa.int64(),
    "search_objective": pa.float64(),
    "search_objective_se": pa.float64(),
    "validated_error_mean": pa.float64(),
    "validated_error_ci_low": pa.float64(),
    "validated_error_ci_high": pa.float64(),
    "validated_rel_error_mean": pa.float64(),
    "validated_bias": pa.float64(),
    "validated_sd": pa.float64(),
    "validated_llc_mean": pa.float64(),
    "n_validation_runs": pa.int64(),
    "n_validation_failed": pa.int64(),
    "n_candidates": pa.int64(),
    "llc_ref": pa.float64(),
    "se_ref": pa.float64(),
    "trials_done": pa.int64(),
    "trials_pruned": pa.int64(),
    "trials_failed": pa.int64(),
}


def write_leaderboard(path: Path, rows: list[dict[str, Any]]) -> int:
    """Merge study rows into ``leaderboard.parquet`` (a study's new row replaces its old
    one; other studies' rows stay), atomically under a lock; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        by_study = {(r["pid"], r["method"]): r for r in read_rows(path)}
        for row in rows:
            by_study[(row["pid"], row["method"])] = {k: row.get(k) for k in LEADERBOARD_COLUMNS}
        table = pa.table(
            {
                name: pa.array([r.get(name) for r in by_study.values()], type=kind)
                for name, kind in LEADERBOARD_COLUMNS.items()
            }
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return len(by_study)
