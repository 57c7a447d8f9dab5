"""The flows on the embedded default, against one real Prefect server for the whole run:
Dask LocalCluster (2 worker processes), SQLite-backed Optuna, Parquet and artifacts."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import optuna
import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.reference import reference
from flows.study import OBJECTIVE_NAME
from flows.tune import tune
from lambda_hat.problems.sizes import estimate, human
from lambda_hat.problems.specs import load_problem_set
from lambda_hat.problems.targets import build_problem
from lambda_hat.results.plot_points import study_trials
from lambda_hat.results.tables import COLUMNS, flatten_row, parts_dir, read_rows, run_records
from lambda_hat.samplers.run_method import run_trial
from lambda_hat.settings import Settings
from lambda_hat.tuning.driver import study_seeds
from lambda_hat.tuning.pinning import UnitsChanged
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.trials import config_id_for

from .conftest import REPO, sgld_methods

# Small studies: each trial takes well under a second once compiled.
FAST_METHODS = (
    sgld_methods(1000, 1.0e-5, 1.0e-3, num_chains=4)
    + """  vi:
    fixed: {num_steps: 500, num_chains: 4, family: meanfield, num_eval_samples: 64}
    space:
      learning_rate: {type: float, low: 1.0e-3, high: 1.0e-2, log: true}
"""
)
SMALL_REFERENCE = {"reference_warmup": 100, "reference_draws": 200}


def artifacts(*keys: str) -> list:
    """The latest artifact of each key (one Prefect server serves the whole test run, so
    earlier tests' runs have artifacts of the same keys)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=list(keys))),
            sort=ArtifactSort.CREATED_DESC,
        )
    latest: dict[str, object] = {}
    for artifact in found:
        latest.setdefault(artifact.key, artifact)
    return list(latest.values())


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


def test_a_sharded_reference_runs_its_chains_as_tasks_and_writes_one_record(
    prefect_server, lambda_hat_env
):
    small = {"problems": "smoke", "num_warmup": 100, "num_draws": 200, "shards": 2}
    first = reference(**small)
    assert [r["cached"] for r in first] == [False, False]
    with get_client(sync_client=True) as client:
        names = {run.name for run in client.read_task_runs()}
    for ref in first:
        assert {f"hmc-reference-{ref['name']}-shard-{i}" for i in (0, 1)} <= names
        saved = json.loads(
            (lambda_hat_env / "artifacts" / "problems" / ref["pid"] / "ref.json").read_text()
        )
        assert saved["n_chains"] == 4 and saved["n_draws"] == 4 * 200
        assert saved["hmc_run_id"] == ref["hmc_run_id"] and saved["quality"] != "untrusted"
    second = reference(**small)  # the pooled reference is cached like an unsharded one
    assert [r["cached"] for r in second] == [True, True]
    assert [r["hmc_run_id"] for r in second] == [r["hmc_run_id"] for r in first]


def test_extend_pools_a_new_batch_into_each_cached_reference(prefect_server, lambda_hat_env):
    """The nightly option: each run with ``extend`` samples one more batch of chains with a
    seed no batch has used and pools it into ref.json; a later flow reads the pooled one."""
    small = {"problems": "smoke", "num_warmup": 100, "num_draws": 200}
    first = reference(**small)
    once = reference(**small, extend=True)
    twice = reference(**small, extend=True)
    assert [r["cached"] for r in once] == [False, False]
    for base, ref in zip(first, twice, strict=True):
        stored = json.loads(
            (lambda_hat_env / "artifacts" / "problems" / ref["pid"] / "ref.json").read_text()
        )
        batches = stored["batches"]
        assert [batch["seed"] for batch in batches] == [0, 1, 2]
        assert batches[0]["llc_ref"] == base["llc_ref"]
        assert len({batch["llc_ref"] for batch in batches}) == 3  # independent draws
        shares = [b["n_chains"] * b["n_draws"] for b in batches]
        shares = [share / sum(shares) for share in shares]
        pooled = sum(w * b["llc_ref"] for w, b in zip(shares, batches, strict=True))
        se = sum(w**2 * b["se_ref"] ** 2 for w, b in zip(shares, batches, strict=True))
        assert stored["llc_ref"] == pytest.approx(pooled, rel=1e-12)
        assert stored["se_ref"] == pytest.approx(se**0.5, rel=1e-12)
        assert stored["n_chains"] == 3 * base["n_chains"]
        assert stored["se_ref"] < max(b["se_ref"] for b in batches)
    # Without extend, the pooled references are what a flow reads (no HMC runs).
    again = reference(**small)
    assert [r["llc_ref"] for r in again] == [r["llc_ref"] for r in twice]
    assert all(r["cached"] for r in again)


def test_tune_end_to_end_then_resume(prefect_server, lambda_hat_env):
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(FAST_METHODS)
    run = {
        "problems": "smoke", "methods": ["sgld", "vi"], "batch": 2, "repeats": 2,
        "pruner": "none", "validate_top_k": 1, "validation_seeds": 2, **SMALL_REFERENCE,
    }  # fmt: skip
    result = tune(n_trials=4, methods_file=str(methods_file), **run)

    parquet = lambda_hat_env / "results" / "runs.parquet"
    rows = read_rows(parquet)
    search = [row for row in rows if row["stage"] == "search"]
    assert len(search) == 2 * 2 * 4 * 2
    # Written a part per run, compacted at the end: the file alone equals the per-run files.
    assert not list(parts_dir(parquet).glob("*.parquet"))
    per_run = [flatten_row(r) for r in run_records(lambda_hat_env / "artifacts" / "runs")]
    in_file = pq.read_table(parquet).to_pylist()
    assert {r["run_id"]: {k: r[k] for k in COLUMNS} for r in in_file} == {
        r["run_id"]: {k: r[k] for k in COLUMNS} for r in per_run
    }
    assert len({row["run_id"] for row in rows}) == len(rows)
    for row in rows:
        if row["status"] == "ok":
            assert row["objective"] == pytest.approx(abs(row["llc_hat"] - row["llc_ref"]))
        else:
            assert row["objective"] is None and row["error"]
        assert row["hostname"] and row["worker_pid"] and row["code_version"]
        assert row["config_id"].startswith("c_")
        metrics = lambda_hat_env / "artifacts" / "runs" / row["pid"] / row["method"] / row["run_id"]
        assert json.loads((metrics / "metrics.json").read_text())["status"] == row["status"]
        assert (metrics / "manifest.json").exists()
    assert {row["hp_step_size"] is not None for row in rows if row["method"] == "sgld"} == {True}
    assert len(result["leaderboard"]) == 4
    assert all(entry["trials_done"] == 4 for entry in result["leaderboard"])
    board = read_rows(lambda_hat_env / "results" / "leaderboard.parquet")
    assert len(board) == 4 and all(
        r["n_validation_runs"] + r["n_validation_failed"] == 2 for r in board
    )
    # Artifact keys people can read: the problem's name, not its hash.
    pids = {ref["pid"] for ref in result["references"]}
    names = {ref["name"] for ref in result["references"]}
    progress = {f"progress-{n.replace('_', '-')}-{m}" for n in names for m in ("sgld", "vi")}
    assert artifact_keys("leaderboard", "tune-report", *progress) == {
        "leaderboard",
        "tune-report",
        *progress,
    }
    # The markdown says where the report is without a path of this machine's.
    (markdown,) = artifacts("tune-report")
    assert "file://" not in markdown.data and str(lambda_hat_env) not in markdown.data
    assert "report/index.html" in markdown.data and "★" in markdown.data
    bars = artifacts(*progress)
    assert len(bars) == len(progress)
    assert all(bar.description.startswith("4 of 4 trials, best so far ") for bar in bars), [
        bar.description for bar in bars
    ]

    # Resume: the same studies to 6 trials run exactly 2 new trials each.
    resumed = tune(n_trials=6, methods_file=str(methods_file), **run)
    assert [study.trials_run_now for study in resumed["studies"]] == [2, 2, 2, 2]
    assert all(ref["cached"] for ref in resumed["references"])
    storage = Settings().storage_url()
    for pid in pids:
        for method in ("sgld", "vi"):
            study = optuna.load_study(study_name=f"{pid}:{method}", storage=storage)
            finished = [t for t in study.trials if t.state.is_finished()]
            assert len(finished) == 6
            assert study.user_attrs["problem_name"] and study.user_attrs["llc_ref"] > 0
    rows = read_rows(parquet)
    assert len([r for r in rows if r["stage"] == "search"]) == 2 * 2 * 6 * 2
    assert len({row["run_id"] for row in rows}) == len(rows)


def test_a_new_run_starts_as_soon_as_one_finishes(prefect_server, lambda_hat_env):
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
    for steps in (60000, 200, 201, 202):  # distinct configurations, so distinct runs
        study.enqueue_trial({"num_steps": steps})
    result = tune(
        problems=str(problems),
        methods=["sgld"],
        n_trials=4,
        batch=2,
        methods_file=str(methods_file),
        repeats=1,
        validate_top_k=0,
        **SMALL_REFERENCE,
    )
    # Validation off: the leaderboard still names the best search configuration.
    (entry,) = result["leaderboard"]
    assert entry["config_id"] and entry["validated_error_mean"] is None
    assert entry["search_objective"] is not None
    # (stage, trial number, repeat, started, finished), by trial number
    timeline = sorted(t[1:] for t in result["studies"][0].timeline)
    (_, _, long_start, long_end), (_, _, _, short_end) = timeline[0], timeline[1]
    assert long_end - long_start > 2.0, timeline  # the long trial really is long
    third_start = timeline[2][2]
    assert short_end <= third_start < long_end, timeline


PRUNE_METHODS = sgld_methods(1000, 1.0e-7, 3.0e-4)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_exported_runs_reproduce(root: Path, board: dict, validation_row: dict, spec) -> None:
    """``python -m lambda_hat export`` on the run's files: the recommendation as a methods
    file that loads back (``--methods-file``) as the same configuration, whose run on a
    validation seed gives that run's llc_hat again."""
    out = root / "exported"
    done = subprocess.run(
        [sys.executable, "-m", "lambda_hat", "export", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    path = out / f"{board['problem_name']}-{board['method']}.yaml"
    space = load_methods(path)[board["method"]]
    config = space.config({})
    assert config_id_for(board["method"], config.model_dump(mode="json")) == board["config_id"]
    again = run_trial(
        build_problem(spec), board["method"], config, budget_sec=validation_row["budget_sec"],
        seed=validation_row["seed"],
    )  # fmt: skip
    assert again.llc_hat == pytest.approx(validation_row["llc_hat"], rel=1e-9)
    shown = subprocess.run(
        [sys.executable, "-m", "lambda_hat", "leaderboard"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )  # fmt: skip
    assert shown.returncode == 0 and f"{board['method']}: " in shown.stdout, shown.stderr


def assert_report(index: Path, problem_name: str) -> None:
    """Every plot a valid, non-empty PNG, named for people; the page self-contained."""
    names = {path.name for path in index.parent.glob("*.png")}
    assert {
        f"reference-{problem_name}.png",
        f"cost-{problem_name}.png",
        f"study-{problem_name}-sgld.png",
        "calibration-sgld.png",
    } <= names, names
    for name in names:
        data = (index.parent / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    page = index.read_text()
    assert page.count('src="data:image/png;base64,') == len(names)
    # Nothing to fetch (opens offline): links go to its own sections and the user guide.
    assert not re.search(r'(src|href)="(?!data:|#|file://[^"]*/docs/user-guide\.md")', page)
    assert 'id="answer"' in page and "code version" in page  # the answer, the run's record
    assert "http://" not in page and "https://" not in page


def validation_task_runs(problem_name: str, run_ids: set[str]) -> list[str]:
    """The validation task runs that ran any of ``run_ids``: what follows the run id in
    each one's name (``+R`` for a group of R runs; empty for a single run)."""
    from prefect import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    prefix = f"sgld-{problem_name}-validation-"
    with get_client(sync_client=True) as client:
        names = [
            task_run.name
            for task_run in client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=prefix))
            )
        ]
    found = []
    for name in names:
        run_id, _, size = name.removeprefix(prefix).partition("+")
        if run_id in run_ids:
            found.append(f"+{size}" if size else "")
    return found


def test_repeats_pruning_and_validation_through_the_flow(prefect_server, lambda_hat_env):
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(PRUNE_METHODS)
    problems = lambda_hat_env / "problems.yaml"
    spec = load_problem_set("smoke").problems[0]
    problems.write_text(json.dumps({"problems": [spec.model_dump(mode="json")]}))
    held_spec = load_problem_set("smoke").problems[1]
    held = lambda_hat_env / "held.yaml"  # a held-out problem: the recommendation's transfer
    held.write_text(json.dumps({"problems": [held_spec.model_dump(mode="json")]}))
    storage = Settings().storage_url()
    (lambda_hat_env / "results").mkdir(parents=True, exist_ok=True)
    name = f"{spec.pid}:sgld"
    study = optuna.create_study(study_name=name, storage=storage)
    study.enqueue_trial({"step_size": 1e-4})  # a sound configuration first: the best
    study.enqueue_trial({"step_size": 1e-7})  # then a bad one: chains barely move
    run = {
        "problems": str(problems), "methods": ["sgld"], "n_trials": 4, "batch": 1,
        "methods_file": str(methods_file), "repeats": 3, "pruner": "wilcoxon",
        "validate_top_k": 2, "validation_seeds": 3, "holdout": str(held), **SMALL_REFERENCE,
    }  # fmt: skip
    result = tune(**run)

    study = optuna.load_study(study_name=name, storage=storage)
    parquet = lambda_hat_env / "results" / "runs.parquet"
    rows = read_rows(parquet)
    search = [r for r in rows if r["stage"] == "search"]
    bad = study.trials[1]
    assert bad.state == optuna.trial.TrialState.PRUNED, bad.user_attrs
    assert len([r for r in search if r["trial_number"] == 1]) <= 2  # its runs are rows
    assert len([t for t in study.trials if "status" in t.user_attrs]) == 4  # count reached
    seeds = study_seeds(name, 3)
    for trial in study.trials:
        mine = sorted((r["repeat"], r["seed"]) for r in search if r["trial_number"] == trial.number)
        assert [seed for _, seed in mine] == seeds[: len(mine)]  # common random numbers
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert len(mine) == 3 and len(trial.user_attrs["llc_hats"]) == 3
        # Each run's row carries its trial's state and figures once the trial is told.
        told = [r for r in search if r["trial_number"] == trial.number]
        assert {r["trial_state"] for r in told} == {trial.state.name.lower()}
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert told[0]["trial_objective"] == pytest.approx(trial.value)
            assert told[0]["trial_objective"] == pytest.approx(
                sum(r["objective"] for r in told) / 3
            )
    validation = [r for r in rows if r["stage"] == "validation"]
    by_config = {}
    for r in validation:
        by_config.setdefault(r["config_id"], []).append(r)
    complete = {
        t.user_attrs["config_id"]
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE
    }
    assert len(by_config) == min(2, len(complete)) and set(by_config) <= complete
    assert all(len(v) == 3 for v in by_config.values())
    assert not {r["seed"] for r in validation} & {r["seed"] for r in search}
    # A configuration's validation runs are one task run (its 3 seeds), not three.
    assert validation_task_runs(spec.name, {r["run_id"] for r in validation}) == ["+3"] * len(
        by_config
    )
    # The leaderboard's validated figures are what the rows give.
    (board,) = read_rows(lambda_hat_env / "results" / "leaderboard.parquet")
    chosen = by_config[board["config_id"]]
    errors = [r["abs_error"] for r in chosen]
    assert board["validated_error_mean"] == pytest.approx(sum(errors) / 3)
    assert board["validated_bias"] == pytest.approx(
        sum(r["llc_hat"] for r in chosen) / 3 - board["llc_ref"]
    )
    others = [sum(r["abs_error"] for r in v) / 3 for v in by_config.values()]
    assert board["validated_error_mean"] == pytest.approx(min(others))
    assert result["leaderboard"][0]["config_id"] == board["config_id"]
    # The recommendation on the held-out problem: fresh seeds, its own reference.
    transfer = [r for r in rows if r["stage"] == "transfer"]
    assert {(r["pid"], r["config_id"], r["study_name"]) for r in transfer} == {
        (held_spec.pid, board["config_id"], name)
    }
    assert len(transfer) == 3 and not {r["seed"] for r in transfer} & {r["seed"] for r in search}
    assert not {r["seed"] for r in transfer} & {r["seed"] for r in validation}
    assert board["transfer_rel_error_mean"] == pytest.approx(
        sum(r["rel_error"] for r in transfer) / 3
    )
    assert transfer[0]["llc_ref"] != board["llc_ref"]
    assert_report(Path(result["report"]), spec.name)
    # The recommendation's chains against the reference, from its first validation run.
    trace = Path(result["report"]).parent / f"trace-{spec.name}-sgld.png"
    assert trace.read_bytes().startswith(PNG_MAGIC)
    first = min((r for r in chosen), key=lambda r: r["seed"])
    metrics = json.loads(
        (lambda_hat_env / "artifacts" / "runs" / spec.pid / "sgld" / first["run_id"]
         / "metrics.json").read_text()
    )["diagnostics"]  # fmt: skip
    assert metrics["trace"] and all(0 < len(chain) <= 100 for chain in metrics["trace"])
    plotted = study_trials(rows, name)  # the study plot's points: every told trial
    assert [(t["number"], t["state"]) for t in plotted] == [
        (t.number, t.state.name) for t in study.trials
    ]
    # optuna-dashboard shows which problem a study is, and each trial's figures.
    assert study.user_attrs["problem_name"] == spec.name and study.user_attrs["pid"] == spec.pid
    assert study.user_attrs["name"] == f"{spec.name} · sgld"
    assert study.user_attrs["method"] == "sgld" and study.user_attrs["lambda_theory"] > 0
    assert study.user_attrs["llc_ref"] == board["llc_ref"]
    assert study.user_attrs["se_ref"] == board["se_ref"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert all({"llc_hat", "abs_error", "runtime_sec"} <= set(t.user_attrs) for t in done)
    # ... its objective's name, and the validated error beside Optuna's biased "best".
    assert study.metric_names == [OBJECTIVE_NAME]
    recommended = study.user_attrs["recommended"]
    assert recommended["mean"] == pytest.approx(board["validated_error_mean"])
    assert recommended["config_id"] == board["config_id"] and recommended["n_runs"] == 3
    assert_exported_runs_reproduce(lambda_hat_env, board, chosen[0], spec)

    # Rerunning the same command recomputes nothing and adds no row.
    again = tune(**run)
    assert again["studies"][0].trials_run_now == 0
    assert len(read_rows(parquet)) == len(rows)


def test_a_flow_killed_between_repeats_resumes_without_recomputing(prefect_server, lambda_hat_env):
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(PRUNE_METHODS.replace("num_steps: 1000", "num_steps: 6000"))
    problems = lambda_hat_env / "problems.yaml"
    spec = load_problem_set("smoke").problems[1]
    problems.write_text(json.dumps({"problems": [spec.model_dump(mode="json")]}))
    argv = [
        sys.executable, str(REPO / "flows" / "tune.py"), "--problems", str(problems),
        "--methods", "sgld", "--n-trials", "1", "--batch", "1", "--repeats", "3",
        "--pruner", "none", "--validate-top-k", "0", "--methods-file", str(methods_file),
        "--reference-warmup", "100", "--reference-draws", "200",
    ]  # fmt: skip
    runs = lambda_hat_env / "artifacts" / "runs" / spec.pid / "sgld"
    log = open(lambda_hat_env / "first.log", "w")  # noqa: SIM115 - the child owns it
    first = subprocess.Popen(
        argv, cwd=lambda_hat_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 300
        while not list(runs.glob("*/row.json")):  # one repeat done and recorded
            assert first.poll() is None and time.monotonic() < deadline, (
                lambda_hat_env / "first.log"
            ).read_text()[-3000:]
            time.sleep(0.1)
        os.killpg(first.pid, signal.SIGKILL)  # the flow and its Dask workers
        first.wait(30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    done_before = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/row.json")}
    storage = Settings().storage_url()
    study = optuna.load_study(study_name=f"{spec.pid}:sgld", storage=storage)
    assert len(done_before) < 3, "the kill came after the trial finished; nothing was tested"
    assert study.trials[0].state == optuna.trial.TrialState.RUNNING

    second = subprocess.run(argv, cwd=lambda_hat_env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    study = optuna.load_study(study_name=f"{spec.pid}:sgld", storage=storage)
    told = [t for t in study.trials if "status" in t.user_attrs]
    assert len(told) == 1 and told[0].state == optuna.trial.TrialState.COMPLETE
    rows = {r["run_id"]: r for r in read_rows(lambda_hat_env / "results" / "runs.parquet")}
    assert set(rows) == set(told[0].user_attrs["run_ids"])  # all 3 repeats, once each
    for run_id, row in done_before.items():  # finished before the kill: not recomputed
        assert rows[run_id]["started_at"] == row["started_at"]


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
        env={
            **os.environ,
            "LAMBDA_HAT_TUNING__REPEATS": "2",  # a setting as the default
            # A SQLite file of the user's own: a dry run must not create it either.
            "LAMBDA_HAT_OPTUNA_STORAGE": f"sqlite:///{lambda_hat_env / 'mine.db'}",
        },
    )
    assert out.returncode == 0, out.stderr
    assert "3 trials per study × 2 repeats (wilcoxon pruner, tpe sampler)" in out.stdout, out.stdout
    for spec in load_problem_set("smoke").problems:
        memory = human(estimate(spec).total)
        assert f"{spec.name} ({spec.pid}): reference to compute; memory ≈ {memory}" in out.stdout
        assert f"study {spec.pid}:sgld: 0 finished, 3 to run" in out.stdout
    assert not (lambda_hat_env / "results").exists()
    assert not (lambda_hat_env / "artifacts").exists()
    assert not (lambda_hat_env / "mine.db").exists()


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
        "--repeats",
        "--pruner",
        "--validate-top-k",
        "--validation-seeds",
        "--dry-run",
    ):
        assert option in out.stdout
    text = " ".join(out.stdout.split())  # (argparse wraps lines)
    for default in ("(default: 8)", "(default: 2)", "(default: abs)", "PRUNER or wilcoxon)"):
        assert default in text, default
    assert "(default: None)" not in text and "index.html" in text


def test_tuning_refuses_an_untrusted_reference_in_one_line(prefect_server, lambda_hat_env):
    # A starved reference (8 draws per chain): its verdict is untrusted, and tuning against
    # it stops before any trial, with one line saying why and how to override.
    argv = [
        sys.executable, str(REPO / "flows" / "tune.py"), "--problems", "smoke",
        "--methods", "sgld", "--n-trials", "1", "--reference-warmup", "20",
        "--reference-draws", "8",
    ]  # fmt: skip
    out = subprocess.run(argv, cwd=lambda_hat_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: untrusted reference: ") and "ESS" in last, last
    assert "--allow-untrusted-references" in last
    assert not (lambda_hat_env / "results" / "runs.parquet").exists()  # no trial ran
    refs = list((lambda_hat_env / "artifacts" / "problems").glob("*/ref.json"))
    assert refs and all(json.loads(p.read_text())["quality"] == "untrusted" for p in refs)
    assert artifact_keys("reference-table") == {"reference-table"}


def test_the_example_custom_problem_runs_end_to_end(prefect_server, lambda_hat_env):
    # What the user guide tells a newcomer to type, from the repository root: the factory
    # examples.my_model:make_problem is found there without installing anything.
    argv = [
        sys.executable, "flows/tune.py", "--problems", "examples/my_model.yaml",
        "--methods", "sgld", "--n-trials", "1", "--repeats", "1", "--validate-top-k", "1",
        "--validation-seeds", "2", "--reference-warmup", "300", "--reference-draws", "400",
    ]  # fmt: skip
    out = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = read_rows(lambda_hat_env / "results" / "runs.parquet")
    assert {row["stage"] for row in rows} == {"search", "validation"}
    assert all(row["status"] == "ok" and row["llc_hat"] > 0 for row in rows), rows
    spec = load_problem_set(str(REPO / "examples" / "my_model.yaml")).problems[0]
    ref_path = lambda_hat_env / "artifacts" / "problems" / spec.pid / "ref.json"
    ref = json.loads(ref_path.read_text())
    assert ref["name"] == "moons_tanh3" and ref["quality"] != "untrusted", ref["quality"]
    assert {row["pid"] for row in rows} == {spec.pid}


def test_help_and_argument_errors_load_no_heavy_library():
    """Fast by construction (not a wall-clock bound): JAX, Prefect and Optuna take seconds
    to import, and --help or a malformed argument must not wait for them."""
    for argv, code in ((["--help"], 0), (["--n-trials", "0"], 2), (["--huber-k", "nan"], 2)):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", str(REPO / "flows" / "tune.py"), *argv],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == code, out.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
        heavy = {name for name in imported if name.split(".")[0] in ("jax", "prefect", "optuna")}
        assert not heavy, sorted(heavy)[:10]


def test_the_studies_of_a_campaign_run_at_the_same_time(prefect_server, lambda_hat_env):
    """Two studies at batch 1 on the 2-worker local cluster: the second study's subflow is
    running before the first one's ends (one after the other, as before, they never
    could), as Prefect's own start and end times show.

    Why not the runs' own spans: a worker builds a problem once (w*, its checks) before its
    first run, outside that run's span. The worker that computed the reference has it
    built; the other builds it first. On a busy CI machine that took 12 s, in which the
    warm worker ran the other study's three runs whole, so the run spans did not meet
    although both studies were in flight. Both methods' runs are still a few seconds long,
    so each study lasts several of them."""
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(
        FAST_METHODS.replace("num_steps: 1000,", "num_steps: 20000,", 1).replace(
            "num_steps: 500,", "num_steps: 40000,", 1
        )
    )
    problems = lambda_hat_env / "problems.yaml"
    spec = load_problem_set("smoke").problems[0]
    problems.write_text(json.dumps({"problems": [spec.model_dump(mode="json")]}))
    result = tune(
        problems=str(problems), methods=["sgld", "vi"], n_trials=3, batch=1, repeats=1,
        pruner="none", validate_top_k=0, methods_file=str(methods_file), **SMALL_REFERENCE,
    )  # fmt: skip
    assert all(len(study.timeline) == 3 for study in result["studies"])
    rows = read_rows(lambda_hat_env / "results" / "runs.parquet")
    subflow_of = {row["method"]: row["flow_run_id"] for row in rows}
    assert set(subflow_of) == {"sgld", "vi"}, subflow_of
    with get_client(sync_client=True) as client:
        a, b = (client.read_flow_run(UUID(flow_run_id)) for flow_run_id in subflow_of.values())
    spans = [(a.start_time, a.end_time), (b.start_time, b.end_time)]
    assert a.start_time < b.end_time and b.start_time < a.end_time, spans  # they intersect


def test_a_warm_start_is_each_new_studys_first_trial_in_the_recipes_units(
    prefect_server, lambda_hat_env
):
    """A recipe campaign writes SGLD's step per nβ; a per-problem campaign warm-started
    from it tunes the step per nβ too, and its study's trial 0 is the recipe. The same
    study resumed in absolute units (no warm start) is refused in one line."""
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(FAST_METHODS)
    recipe = lambda_hat_env / "recipe.yaml"
    recipe.write_text(
        "methods:\n  sgld:\n    fixed: {step_size: 0.05, step_size_scale: per_nbeta,"
        " num_steps: 1000, thinning: 5, num_chains: 4, batch_size: 64}\n    space: {}\n"
    )
    problems = lambda_hat_env / "problems.yaml"
    spec = load_problem_set("smoke").problems[0]
    problems.write_text(json.dumps({"problems": [spec.model_dump(mode="json")]}))
    campaign = dict(
        problems=str(problems), methods=["sgld"], n_trials=2, batch=1, repeats=1,
        pruner="none", validate_top_k=0, methods_file=str(methods_file), **SMALL_REFERENCE,
    )  # fmt: skip
    tune(**campaign, warm_start=str(recipe))
    study = optuna.load_study(study_name=f"{spec.pid}:sgld", storage=Settings().storage_url())
    first = min(study.trials, key=lambda t: t.number)
    assert first.params == {"step_size": 0.05} and first.user_attrs["warm_start"] == str(recipe)
    assert study.user_attrs["units"] == {"step_size_scale": "per_nbeta"}
    manifests = (lambda_hat_env / "artifacts" / "runs" / spec.pid / "sgld").glob("*/manifest.json")
    scales = {json.loads(path.read_text())["config"]["step_size_scale"] for path in manifests}
    assert scales == {"per_nbeta"}
    with pytest.raises(UnitsChanged, match="its trials tuned step_size_scale 'per_nbeta'"):
        tune(**{**campaign, "n_trials": 3})


def test_the_study_subflow_pickles():
    """Prefect ships the flow to Dask workers with each task: a global it uses that does
    not pickle (once, the campaign's ContextVar) breaks every run."""
    import cloudpickle

    from flows.study import tune_study

    assert cloudpickle.loads(cloudpickle.dumps(tune_study)).name == "tune-study"


def test_a_slow_reference_delays_only_its_own_studies(prefect_server, lambda_hat_env):
    """Two problems, neither reference cached: a tiny RRR (its reference is on the data's
    second moments, seconds) and a tanh MLP on 2 000 rows (every gradient touches every
    row; about 40 s). The RRR's study starts as soon as its own reference is in, while the MLP's is
    still being computed; the MLP's study waits for its own."""
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(FAST_METHODS)
    fast = load_problem_set("smoke").problems[0].model_dump(mode="json")
    slow = {
        "name": "slow_mlp",
        "model": {"family": "mlp", "widths": [2, 3, 1]},
        "data": {"n": 2000},
    }
    problems = lambda_hat_env / "problems.yaml"
    problems.write_text(json.dumps({"problems": [fast, slow]}))
    result = tune(
        problems=str(problems), methods=["sgld"], n_trials=2, batch=1, repeats=1,
        pruner="none", validate_top_k=0, methods_file=str(methods_file),
        allow_untrusted_references=True, **SMALL_REFERENCE,
    )  # fmt: skip
    ended = {ref["name"]: ref["computed_at"] + ref["runtime_sec"] for ref in result["references"]}
    first_start = {
        study.problem_name: min(start for *_, start, _ in study.timeline)
        for study in result["studies"]
    }
    assert first_start[fast["name"]] >= ended[fast["name"]]
    assert first_start[fast["name"]] < ended["slow_mlp"], (first_start, ended)
    assert first_start["slow_mlp"] >= ended["slow_mlp"]
    assert all(len(study.timeline) == 2 for study in result["studies"])
