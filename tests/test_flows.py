"""The flows on the embedded default, against one real Prefect server for the whole run:
Dask LocalCluster (2 worker processes), SQLite-backed Optuna, Parquet and artifacts."""

import json
import subprocess
import sys

import optuna
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.reference import reference
from flows.tune import tune
from lambda_hat.problems import load_problem_set
from lambda_hat.results import read_rows
from lambda_hat.settings import Settings

from .conftest import REPO

# Small studies: each trial takes well under a second once compiled.
FAST_METHODS = """
methods:
  sgld:
    fixed: {num_steps: 1000, thinning: 5, num_chains: 4, batch_size: 64}
    space:
      step_size: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
  vi:
    fixed: {num_steps: 500, num_chains: 4, family: meanfield, num_eval_samples: 64}
    space:
      learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""
SMALL_REFERENCE = {"reference_warmup": 100, "reference_draws": 200}


def artifact_keys(*keys: str) -> set[str]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys)))
        )
    return {artifact.key for artifact in found}


def test_reference_flow_is_cached_the_second_time_and_refresh_recomputes(
    prefect_server, lambda_hat_env
):
    small = {"problems": "smoke", "num_warmup": 100, "num_draws": 200}
    first = reference(**small)
    second = reference(**small)
    refreshed = reference(**small, refresh=True)
    assert [r["cached"] for r in first] == [False, False]
    assert [r["cached"] for r in second] == [True, True]
    # The same computation came back: no HMC ran the second time.
    assert [r["hmc_run_id"] for r in second] == [r["hmc_run_id"] for r in first]
    assert [r["cached"] for r in refreshed] == [False, False]
    assert not {r["hmc_run_id"] for r in refreshed} & {r["hmc_run_id"] for r in first}
    for ref in first:
        ref_json = lambda_hat_env / "artifacts" / "problems" / ref["pid"] / "ref.json"
        assert json.loads(ref_json.read_text())["pid"] == ref["pid"]
        assert (ref_json.parent / "spec.yaml").exists()
    assert artifact_keys("reference-table") == {"reference-table"}


def test_tune_end_to_end_then_resume(prefect_server, lambda_hat_env):
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(FAST_METHODS)
    run = {"problems": "smoke", "methods": ["sgld", "vi"], "batch": 2, **SMALL_REFERENCE}
    result = tune(n_trials=4, methods_file=str(methods_file), **run)

    parquet = lambda_hat_env / "results" / "runs.parquet"
    rows = read_rows(parquet)
    assert len(rows) == 2 * 2 * 4
    assert len({row["trial_id"] for row in rows}) == len(rows)
    for row in rows:
        if row["status"] == "ok":
            assert row["objective"] == pytest.approx(abs(row["llc_hat"] - row["llc_ref"]))
        else:
            assert row["objective"] is None and row["error"]
        assert row["hostname"] and row["worker_pid"] and row["code_version"]
        metrics = (
            lambda_hat_env / "artifacts" / "runs" / row["pid"] / row["method"] / row["trial_id"]
        )
        assert json.loads((metrics / "metrics.json").read_text())["status"] == row["status"]
        assert (metrics / "manifest.json").exists()
    assert {row["hp_step_size"] is not None for row in rows if row["method"] == "sgld"} == {True}
    assert len(result["leaderboard"]) == 4
    assert all(entry["trials_done"] == 4 for entry in result["leaderboard"])
    pids = {ref["pid"] for ref in result["references"]}
    progress = {f"progress-{pid.replace('_', '-')}-{m}" for pid in pids for m in ("sgld", "vi")}
    assert artifact_keys("leaderboard", "tune-report", *progress) == {
        "leaderboard",
        "tune-report",
        *progress,
    }

    # Resume: the same studies to 6 trials run exactly 2 new trials each.
    resumed = tune(n_trials=6, methods_file=str(methods_file), **run)
    assert [study["trials_run_now"] for study in resumed["studies"]] == [2, 2, 2, 2]
    assert all(ref["cached"] for ref in resumed["references"])
    storage = Settings().storage_url()
    for pid in pids:
        for method in ("sgld", "vi"):
            study = optuna.load_study(study_name=f"{pid}:{method}", storage=storage)
            finished = [t for t in study.trials if t.state.is_finished()]
            assert len(finished) == 6
    rows = read_rows(parquet)
    assert len(rows) == 2 * 2 * 6 and len({row["trial_id"] for row in rows}) == len(rows)


def test_a_new_trial_starts_as_soon_as_one_finishes(prefect_server, lambda_hat_env):
    # One long trial and short ones, batch 2: the third trial must start when the short
    # second one ends, long before the first one does.
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(
        "methods:\n  sgld:\n    fixed: {thinning: 5, batch_size: 64, step_size: 1.0e-4}\n"
        "    space:\n      num_steps: {type: int, low: 100, high: 100000}\n"
    )
    problems = lambda_hat_env / "problems.yaml"
    spec = load_problem_set("smoke").problems[0]
    problems.write_text(json.dumps({"problems": [spec.model_dump(mode="json")]}))
    storage = Settings().storage_url()
    (lambda_hat_env / "results").mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=f"{spec.pid}:sgld", storage=storage)
    for steps in (60000, 200, 200, 200):
        study.enqueue_trial({"num_steps": steps})
    result = tune(
        problems=str(problems),
        methods=["sgld"],
        n_trials=4,
        batch=2,
        methods_file=str(methods_file),
        **SMALL_REFERENCE,
    )
    timeline = sorted(result["studies"][0]["timeline"])  # by trial number
    (_, long_start, long_end), (_, _, short_end) = timeline[0], timeline[1]
    assert long_end - long_start > 2.0, timeline  # the long trial really is long
    third_start = timeline[2][1]
    assert short_end <= third_start < long_end, timeline


def test_dry_run_prints_the_plan_and_computes_nothing(prefect_server, lambda_hat_env):
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "flows" / "tune.py"),
            "--problems",
            "smoke",
            "--methods",
            "sgld",
            "--n-trials",
            "3",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=lambda_hat_env,
    )
    assert out.returncode == 0, out.stderr
    for spec in load_problem_set("smoke").problems:
        assert f"{spec.name} ({spec.pid}): reference to compute" in out.stdout
        assert f"study {spec.pid}:sgld: 0 finished, 3 to run" in out.stdout
    assert not (lambda_hat_env / "results").exists()
    assert not (lambda_hat_env / "artifacts").exists()


def test_help_works():
    out = subprocess.run(
        [sys.executable, str(REPO / "flows" / "tune.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0
    for option in (
        "--problems",
        "--methods",
        "--n-trials",
        "--batch",
        "--objective",
        "--refresh-references",
        "--dry-run",
    ):
        assert option in out.stdout
