"""Corrupt state on disk (issue 6, fault 6) on the embedded default with a real Prefect
server: a truncated ref.json or metrics.json is recomputed (a truncated cache entry of a
reference whose ref.json is whole is never read); a corrupt
runs.parquet is moved aside and rebuilt from the per-trial records without losing rows.
Also: nothing in the results directory is a pickle (every cache entry is JSON)."""

import json
import subprocess
import sys

import optuna

from flows.reference import reference
from flows.tune import tune
from lambda_hat.problems.specs import load_problem_set
from lambda_hat.results.tables import append_rows, parts_dir, read_rows
from lambda_hat.settings import Settings

from .test_flows import FAST_METHODS, SMALL_REFERENCE

SMALL = {"problems": "smoke", "num_warmup": 100, "num_draws": 200}


def truncate(path, keep=20):
    path.write_bytes(path.read_bytes()[:keep])


def test_truncated_ref_json_or_cache_entry_is_recomputed(prefect_server, lambda_hat_env):
    first = reference(**SMALL)
    problems = lambda_hat_env / "artifacts" / "problems"
    cache = lambda_hat_env / "results" / "prefect-results"
    truncate(problems / first[0]["pid"] / "ref.json")
    (entry,) = cache.glob(f"hmc-reference-{first[1]['pid']}-*")
    truncate(entry)

    again = reference(**SMALL)
    # The first: its ref.json was truncated, so it is computed again. The second: its
    # ref.json is whole and current, and a current ref.json is read before the task cache
    # (it may hold extensions the cache entry lacks), so the truncated entry is never read.
    assert [r["cached"] for r in again] == [False, True]
    assert again[0]["hmc_run_id"] != first[0]["hmc_run_id"]
    assert again[1]["hmc_run_id"] == first[1]["hmc_run_id"]
    for ref in again:
        assert (
            json.loads((problems / ref["pid"] / "ref.json").read_text())["hmc_run_id"]
            == (ref["hmc_run_id"])
        )
    assert [r["cached"] for r in reference(**SMALL)] == [True, True]
    # A number edited on disk (valid JSON, checksum stale) is never tuned against: the
    # reference is computed again, and the file holds the new one.
    edited_path = problems / first[1]["pid"] / "ref.json"
    edited = json.loads(edited_path.read_text())
    edited_path.write_text(json.dumps({**edited, "llc_ref": edited["llc_ref"] + 100.0}))
    third = reference(**SMALL)
    assert [r["cached"] for r in third] == [True, False]
    assert third[1]["hmc_run_id"] != first[1]["hmc_run_id"]
    assert abs(third[1]["llc_ref"] - first[1]["llc_ref"]) < 5 * first[1]["se_ref"]
    assert json.loads(edited_path.read_text())["hmc_run_id"] == third[1]["hmc_run_id"]
    # Cache entries are JSON documents: nothing from the results dir is ever unpickled.
    for path in cache.iterdir():
        if path == entry:
            continue  # the one truncated above
        record = json.loads(path.read_text())
        assert record["metadata"]["serializer"]["type"] == "json", path


def test_corrupt_parquet_is_rebuilt_and_truncated_metrics_are_recomputed(
    prefect_server, lambda_hat_env
):
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(FAST_METHODS)
    spec = load_problem_set("smoke").problems[0]
    problems = lambda_hat_env / "problems.yaml"
    problems.write_text(json.dumps({"problems": [spec.model_dump(mode="json")]}))
    run = {
        "problems": str(problems), "methods": ["sgld"], "batch": 2, "repeats": 1,
        "validate_top_k": 0, **SMALL_REFERENCE,
    }  # fmt: skip
    tune(n_trials=3, methods_file=str(methods_file), **run)

    parquet = lambda_hat_env / "results" / "runs.parquet"
    before = {row["run_id"]: row for row in read_rows(parquet)}
    assert len(before) == 3
    runs = lambda_hat_env / "artifacts" / "runs" / spec.pid / "sgld"
    study = optuna.load_study(study_name=f"{spec.pid}:sgld", storage=Settings().storage_url())
    damaged, intact = study.trials[0], study.trials[1]
    truncate(runs / damaged.user_attrs["run_ids"][0] / "metrics.json")
    truncate(parquet, keep=100)
    # The same parameters again: the same run ids (as after a crash).
    for trial in (damaged, intact):
        study.enqueue_trial(trial.params)

    tune(n_trials=5, methods_file=str(methods_file), **run)
    assert len(list(parquet.parent.glob("runs.parquet.corrupt-*"))) == 1
    after = {row["run_id"]: row for row in read_rows(parquet)}
    assert set(before) <= set(after) and len(after) == 3  # nothing lost, nothing doubled
    damaged_id, intact_id = damaged.user_attrs["run_ids"][0], intact.user_attrs["run_ids"][0]
    assert after[damaged_id]["started_at"] > before[damaged_id]["started_at"]  # recomputed
    assert after[intact_id]["started_at"] == before[intact_id]["started_at"]  # cache hit
    metrics = json.loads((runs / damaged_id / "metrics.json").read_text())
    assert metrics["status"] == after[damaged_id]["status"]


def _runs_with_records(results, runs_dir, run_ids):
    """Rows as the flows write them: one part file each, and each run's row.json."""
    for run_id in run_ids:
        row = {"run_id": run_id, "pid": "p_x", "method": "sgld", "objective": 0.5}
        append_rows(results / "runs.parquet", [row])
        folder = runs_dir / "p_x" / "sgld" / run_id
        folder.mkdir(parents=True)
        (folder / "row.json").write_text(json.dumps(row))


def test_a_garbage_part_is_moved_aside_and_its_runs_come_back(tmp_path, caplog):
    results, runs_dir = tmp_path / "results", tmp_path / "artifacts" / "runs"
    _runs_with_records(results, runs_dir, ["r_a", "r_b"])
    parts = sorted(parts_dir(results / "runs.parquet").glob("*.parquet"))
    parts[1].write_bytes(b"not parquet at all")
    # A reader goes on without it, and says which file it set aside.
    assert [row["run_id"] for row in read_rows(results / "runs.parquet")] == ["r_a"]
    assert parts[1].name in caplog.text and not parts[1].exists()
    assert parts[1].with_name(parts[1].name + ".corrupt").exists()
    # The CLI's compaction (and every tune run's) gets r_b back from its row.json.
    _runs_with_records(results, runs_dir, ["r_c"])
    parts = sorted(parts_dir(results / "runs.parquet").glob("*.parquet"))
    parts[-1].write_bytes(b"\x00" * 10)
    done = _compact_cli(tmp_path)
    assert done.returncode == 0, done.stderr
    assert parts[-1].name in done.stderr and "Traceback" not in done.stderr
    assert sorted(row["run_id"] for row in read_rows(results / "runs.parquet")) == [
        "r_a",
        "r_b",
        "r_c",
    ]


def test_the_cli_rebuilds_a_truncated_runs_parquet_in_one_line(tmp_path):
    results, runs_dir = tmp_path / "results", tmp_path / "artifacts" / "runs"
    _runs_with_records(results, runs_dir, ["r_a", "r_b"])
    assert _compact_cli(tmp_path).returncode == 0
    truncate(results / "runs.parquet", keep=100)
    done = _compact_cli(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1 and "runs.parquet was unreadable" in done.stderr
    assert f"{results / 'runs.parquet'}: 2 rows" in done.stdout


def _compact_cli(root):
    return subprocess.run(
        [sys.executable, "-m", "lambda_hat", "compact",
         "--results-dir", str(root / "results"), "--artifacts-dir", str(root / "artifacts")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
