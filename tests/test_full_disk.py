"""A full disk (issue 16, item 5), on a real full filesystem: a 1 MiB tmpfs mounted for the
test (the suite runs as root; it installs SLURM and Postgres too). Results that cannot be
written stop the run in one line naming the path, leave every file whole, and a full
SQLite database is not retried as if it were a lost connection."""

from __future__ import annotations

import errno
import subprocess
import sys

import optuna
import pytest

from flows.records import write_rows
from lambda_hat.io import DiskFull
from lambda_hat.results.tables import compact, read_rows
from lambda_hat.tuning.storage import StorageError, StorageRetry

from .conftest import REPO


@pytest.fixture
def full_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder) -> None:
    """Take every free byte (the last write fails with ENOSPC)."""
    with open(folder / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


def row(run_id: str) -> dict:
    return {"run_id": run_id, "pid": "p_1", "method": "sgld", "objective": 0.5, "note": "x" * 500}


def test_results_on_a_full_disk_stop_in_one_line_and_leave_files_whole(full_disk):
    parquet, runs = full_disk / "results" / "runs.parquet", full_disk / "runs"
    write_rows([row("r_1")], parquet, runs)  # an earlier run, written while there was room
    compact(parquet)
    write_rows([row("r_0")], parquet, runs)  # and one still in a part file
    before = {p: p.read_bytes() for p in full_disk.rglob("*") if p.is_file()}
    fill(full_disk)
    with pytest.raises(DiskFull) as error:
        write_rows([row(f"r_{i}") for i in range(2, 40)], parquet, runs)
    message = str(error.value)
    assert "\n" not in message and "no space left" in message and str(full_disk) in message
    after = {p: p.read_bytes() for p in full_disk.rglob("*") if p.is_file()}
    assert {p: after[p] for p in before if p.name != "filler"} == {
        p: data for p, data in before.items() if p.name != "filler"
    }  # every file already there is whole
    assert sorted(r["run_id"] for r in read_rows(parquet)) == ["r_0", "r_1"]
    leftovers = [p for p in full_disk.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []  # no half-written temporary file


def test_a_full_sqlite_database_fails_at_once_instead_of_retrying(full_disk):
    url = f"sqlite:///{full_disk / 'optuna.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    fill(full_disk)
    calls = []

    def add_trials():
        calls.append(1)
        for _ in range(2000):
            study.enqueue_trial({"x": 1.0}, user_attrs={"pad": "y" * 2000})

    with pytest.raises(StorageError) as error:
        StorageRetry(within_sec=600)("enqueueing", add_trials)
    assert len(calls) == 1  # not retried for the 600 s budget
    assert "full" in str(error.value) and "\n" not in str(error.value)


LOG_ON_FULL_DISK = """
import logging, sys
from pathlib import Path
from flows.terminal import quiet_console

quiet_console(Path(sys.argv[1]))
with open(Path(sys.argv[1]).parent / "filler", "wb") as filler:
    try:
        while True:
            filler.write(b"\\0" * 65536)
            filler.flush()
    except OSError:
        pass
for _ in range(3):
    logging.getLogger("distributed.nanny").warning("Worker process still alive, killing")
print("error: results: no space left", file=sys.stderr)
"""


def test_a_log_on_the_full_disk_adds_nothing_to_the_terminal(full_disk):
    done = subprocess.run(
        [sys.executable, "-c", LOG_ON_FULL_DISK, str(full_disk / "run.log")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == "error: results: no space left\n", done.stderr


def test_a_run_that_met_a_full_disk_is_not_run_again_as_if_its_worker_were_lost():
    # A worker's write of metrics.json failed with ENOSPC: running it again fails alike
    # (4 "run lost ... running it again" lines on the terminal before the one line).
    from concurrent.futures import Future

    from lambda_hat.tuning.trials import RunPlan, resolve

    future = Future()
    future.set_exception(OSError(errno.ENOSPC, "No space left on device", "/results/m.json"))
    submitted = []
    plan = RunPlan(run_id="r_1", method="sgld", config={}, hyperparams={}, config_id="c_1",
                   seed=0, budget_sec=1.0)  # fmt: skip
    with pytest.raises(DiskFull) as error:
        resolve(future, plan, submitted.append)
    assert submitted == [] and "/results/m.json" in str(error.value)
    lost = Future()
    lost.set_exception(ConnectionError("worker gone"))
    assert resolve(lost, plan, submitted.append)[0] == {} and len(submitted) == 1
