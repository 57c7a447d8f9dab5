"""``runs.parquet``: one row per finished run, flat columns, deduplicated by run_id.

Writes cost O(1) per run, whatever the campaign's size: ``append_rows`` writes the new rows
as one small part file under ``runs.parquet.parts/`` (atomically: temp file + rename), and
``compact`` merges the parts into ``runs.parquet`` under a file lock (the flow compacts at
the end of every run; ``python -m lambda_hat compact`` does it on demand). A later
row of the same run_id replaces an earlier one. ``read_rows`` sees the file and the parts
together, so a reader never waits for a compaction and never sees half a file.
Hyperparameters appear twice: as ``hp_<name>`` columns (for filtering) and as one JSON
column (``hyperparams_json``, exact).

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.parquet"
>>> append_rows(path, [{"run_id": "r_1", "objective": 0.5, "hyperparams": {"step_size": 1e-4}}])
>>> append_rows(path, [{"run_id": "r_1", "objective": 0.4, "hyperparams": {"step_size": 1e-4}}])
>>> [(row["run_id"], row["objective"], row["hp_step_size"]) for row in read_rows(path)]
[('r_1', 0.4, 0.0001)]
>>> compact(path), len(list(parts_dir(path).glob("*.parquet")))
(1, 0)
"""

from __future__ import annotations

import contextlib
import io
import itertools
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


def parts_dir(path: Path) -> Path:
    """Where ``append_rows`` puts its part files: ``runs.parquet.parts/`` beside the file."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def _read_file(path: Path) -> list[dict[str, Any]]:
    """One Parquet file's rows ([] when it does not exist), read with one ``open``:
    pyarrow given a path opens it more than once (footer, then pages), and a writer's
    rename in between made it read one file's footer against another's pages."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return pq.read_table(pa.BufferReader(data)).to_pylist()


def _merge(*row_lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for rows in row_lists:
        for row in rows:
            by_id[row["run_id"]] = row  # a later row of the same run wins
    return list(by_id.values())


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows: the compacted file and the parts not yet merged into it (later rows of a
    run_id win), or [] when there are none. The parts are listed before the file is
    read; a part that a compaction removed in between is in the new file, so the read
    starts again."""
    path = Path(path)
    while True:
        parts = sorted(parts_dir(path).glob("*.parquet"))
        rows = _read_file(path)
        if not parts:
            return rows  # (any Parquet file: leaderboard.parquet has no run_id)
        try:
            part_rows = [_read_part(part, missing_ok=False) for part in parts]
        except FileNotFoundError:
            continue
        return _merge(rows, *(found or [] for found in part_rows))


def _read_part(part: Path, missing_ok: bool = True) -> list[dict[str, Any]] | None:
    """A part file's rows; None for a damaged one, which is moved aside (renamed
    ``<name>.corrupt``, never deleted) with a warning naming it, so that neither this
    run nor any later one stops on it."""
    try:
        data = part.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return []
        raise
    try:
        return pq.read_table(pa.BufferReader(data)).to_pylist()
    except (pa.ArrowException, OSError) as error:
        aside = part.with_name(part.name + ".corrupt")
        with contextlib.suppress(FileNotFoundError):  # another reader moved it first
            os.replace(part, aside)
        log.warning(
            "%s is not a readable Parquet part (%s): moved to %s; its runs come back from "
            "their row.json at the next compaction",
            part,
            str(error).splitlines()[0],
            aside.name,
        )
        return None


def run_records(runs_dir: Path) -> list[dict[str, Any]]:
    """The per-run copies of the rows (``<runs_dir>/<pid>/<method>/<run_id>/row.json``,
    written beside each run's ``metrics.json``); unreadable ones are skipped."""
    records = [read_json(path) for path in sorted(Path(runs_dir).glob("*/*/*/row.json"))]
    return [record for record in records if isinstance(record, dict) and "run_id" in record]


def _flat_records(runs_dir: Path) -> list[dict[str, Any]]:
    return [flatten_row(record) for record in run_records(runs_dir)]


def _existing_rows(path: Path, rebuild_from: Path | None) -> list[dict[str, Any]]:
    """The file's rows; a file that cannot be read is moved aside (never deleted) and the
    rows are rebuilt from the per-run records, with a warning."""
    try:
        return _read_file(path)
    except (pa.ArrowException, OSError) as error:
        if rebuild_from is None:
            raise
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(path, aside)
        rows = _flat_records(rebuild_from)
        log.warning(
            "%s was unreadable (%s): moved to %s and rebuilt %d rows from %s/*/*/*/row.json",
            path,
            str(error).splitlines()[0],
            aside.name,
            len(rows),
            rebuild_from,
        )
        return rows


def _trials_ended(row: dict[str, Any]) -> int:
    return sum(row.get(name) or 0 for name in ("trials_done", "trials_pruned", "trials_failed"))


_sequence = itertools.count()


def append_rows(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write run records as one part file: O(1) in the campaign's size (see the module
    docstring). Part names sort in write order (time, process, sequence)."""
    new = [flatten_row(record) for record in records]
    if not new:
        return
    folder = parts_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{next(_sequence):06d}.parquet"
    buffer = io.BytesIO()
    pq.write_table(_table(new), buffer)
    atomic_write_bytes(folder / name, buffer.getvalue())


def compact(path: Path, rebuild_from: Path | None = None) -> int:
    """Merge the part files into ``path`` (atomically, under a lock) and remove them;
    returns the row count. With ``rebuild_from`` (the runs directory), an unreadable file
    is moved aside and rebuilt from the per-run ``row.json`` records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        parts = sorted(parts_dir(path).glob("*.parquet"))
        rows = _existing_rows(path, rebuild_from)
        part_rows = [_read_part(part) for part in parts]
        if None in part_rows and rebuild_from is not None:
            # A damaged part's runs are still in their row.json: the file's and the good
            # parts' rows win, the records fill in the runs only the damaged part held.
            rows = _merge(_flat_records(rebuild_from), rows)
        merged = _merge(rows, *(found or [] for found in part_rows))
        if parts or not path.exists():
            buffer = io.BytesIO()
            pq.write_table(_table(merged), buffer)
            atomic_write_bytes(path, buffer.getvalue())
        for part in parts:
            part.unlink(missing_ok=True)
    return len(merged)


# leaderboard.parquet: one row per study (a problem's or a recipe's); see
# lambda_hat.tuning.validation and lambda_hat.tuning.recipes.
LEADERBOARD_COLUMNS: dict[str, pa.DataType] = {
    "kind": pa.string(),  # "problem" (one problem's study) or "recipe" (across a set)
    "study_name": pa.string(),
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
    "validated_rel_error_ci_low": pa.float64(),
    "validated_rel_error_ci_high": pa.float64(),
    "n_problems": pa.int64(),
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
    # The recommended configuration on the --holdout problems (mean relative error).
    "transfer_rel_error_mean": pa.float64(),
    "transfer_rel_error_ci_low": pa.float64(),
    "transfer_rel_error_ci_high": pa.float64(),
    "n_transfer_problems": pa.int64(),
    "n_transfer_runs": pa.int64(),
    "n_transfer_failed": pa.int64(),
}


def write_leaderboard(path: Path, rows: list[dict[str, Any]]) -> int:
    """Merge study rows into ``leaderboard.parquet`` atomically under a lock; returns the
    row count. Other studies' rows stay. A study's new row replaces its old one unless the
    old one was built from a later state of the study (more trials ended): two campaigns
    sharing a study then leave the row of the one that saw it last, whichever finishes
    last (a run that did no trials on it must not write back an early count)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock", timeout=120):
        by_study = {(r["pid"], r["method"]): r for r in _read_file(path)}
        for row in rows:
            key = (row["pid"], row["method"])
            if key in by_study and _trials_ended(by_study[key]) > _trials_ended(row):
                continue
            by_study[key] = {k: row.get(k) for k in LEADERBOARD_COLUMNS}
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
