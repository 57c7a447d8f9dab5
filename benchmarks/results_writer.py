"""The cost of recording one finished run in ``runs.parquet``, against the campaign's size.

    .venv/bin/python benchmarks/results_writer.py          # about a minute

For a results table of 1 k, 10 k and 100 k rows (realistic rows: every column filled, two
hyperparameters), the median over ``--repeats`` writes of

* **part file** (``lambda_hat.results.tables.append_rows``, what the flow does per run now): one
  small Parquet file per write, whatever the size of the table;
* **whole-file rewrite** (what it did before): read the table, merge the row, write it all
  again under the lock;

and the one-off ``compact`` at the end of a campaign (merging the parts into the table).
Results go to ``benchmarks/results/results_writer.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from lambda_hat.io import atomic_write_bytes
from lambda_hat.results.tables import _merge, _table, append_rows, compact, flatten_row, read_rows

OUT = Path(__file__).parent / "results" / "results_writer.json"


def record(i: int) -> dict:
    return {
        "run_id": f"r_{i:012x}", "study_name": "p_0123456789ab:sgld", "stage": "search",
        "trial_number": i // 3, "repeat": i % 3, "config_id": f"c_{i // 3:012x}",
        "pid": "p_0123456789ab", "problem_name": "dln_4_4_3_4_r2", "method": "sgld",
        "status": "ok", "objective": 0.1 + i * 1e-6, "objective_kind": "abs", "llc_hat": 5.3,
        "se_hat": 0.05, "llc_ref": 5.41, "se_ref": 0.04, "abs_error": 0.11, "rel_error": 0.02,
        "runtime_sec": 4.2, "grad_evals": 300_000, "full_grad_equiv": 1200.0, "n_draws": 600,
        "seed": 2 * i, "budget_sec": 120.0, "code_version": "0.1.0+abcdef12",
        "started_at": 1.8e9 + i, "finished_at": 1.8e9 + i + 4.2, "hostname": "node-17",
        "worker_pid": 4242, "flow_run_id": "9f3c0a52-1d1e-4c53-a0aa-2c4b1b6c0f00",
        "hyperparams": {"step_size": 1e-5, "batch_size": 64},
    }  # fmt: skip


def whole_file_rewrite(path: Path, new: dict) -> None:
    rows = _merge(read_rows(path), [flatten_row(new)])
    buffer = io.BytesIO()
    pq.write_table(_table(rows), buffer)
    atomic_write_bytes(path, buffer.getvalue())


def timed(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(size: int, repeats: int) -> dict:
    folder = Path(tempfile.mkdtemp())
    path = folder / "runs.parquet"
    append_rows(path, [record(i) for i in range(size)])
    compact(path)
    counter = iter(range(size, size + 10 * repeats))
    part = timed(lambda: append_rows(path, [record(next(counter))]), repeats)
    started = time.perf_counter()
    compact(path)
    compact_sec = time.perf_counter() - started
    rewrite = timed(lambda: whole_file_rewrite(path, record(next(counter))), max(repeats // 4, 3))
    return {
        "rows": size,
        "part_file_ms": round(1e3 * part, 2),
        "whole_file_rewrite_ms": round(1e3 * rewrite, 1),
        f"compact_{repeats}_parts_ms": round(1e3 * compact_sec, 1),
        "file_mb": round(path.stat().st_size / 2**20, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        results.append(measure(size, args.repeats))
        print(json.dumps(results[-1]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"machine": platform.node(), "cpus": __import__("os").cpu_count(), "results": results},
            indent=2,
        )
        + "\n"  # fmt: skip
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
