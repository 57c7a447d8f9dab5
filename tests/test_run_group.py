"""Validation's runs of one configuration on one problem go out as one task that runs them
in order; each run keeps its own files, and a finished run is read back, not recomputed."""

import json

from lambda_hat.problems.specs import load_problem_set
from lambda_hat.samplers.configs import parse_method_config, run_id_for
from tasks.runs import run_group_task, run_method_task

CONFIG = {"step_size": 1e-4, "num_steps": 200, "batch_size": 32}


def test_a_group_runs_each_seed_as_its_own_run_and_reuses_finished_ones(tmp_path):
    spec = load_problem_set("smoke").problems[0]
    paths = {key: str(tmp_path / key) for key in ("results_dir", "artifacts_dir", "jax_cache_dir")}
    seeds = [11, 12, 13]
    runs = [
        {
            "run_id": run_id_for(spec.pid, "sgld", parse_method_config("sgld", CONFIG), seed, 10.0),
            "seed": seed,
        }
        for seed in seeds
    ]
    spec_json = spec.model_dump(mode="json")
    first = run_group_task.fn(runs, spec_json, "sgld", CONFIG, 10.0, **paths, group_size=3)
    assert [r["run_id"] for r in first] == [r["run_id"] for r in runs]
    assert [r["seed"] for r in first] == seeds and len({r["llc_hat"] for r in first}) == 3
    run_dirs = [tmp_path / "artifacts_dir" / "runs" / spec.pid / "sgld" / r["run_id"] for r in runs]
    assert all((d / "metrics.json").exists() and (d / "manifest.json").exists() for d in run_dirs)

    # A grouped run is the run the one-run task computes for the same id.
    alone = run_method_task.fn(runs[1]["run_id"], spec_json, "sgld", CONFIG, 12, 10.0,
                               paths["results_dir"], str(tmp_path / "alone"),
                               paths["jax_cache_dir"], stage="validation")  # fmt: skip
    assert alone["llc_hat"] == first[1]["llc_hat"]

    # A task killed after its first run: the rerun reads that run back and computes the rest.
    (run_dirs[1] / "metrics.json").unlink()
    (run_dirs[2] / "metrics.json").write_text("{trunc")
    again = run_group_task.fn(runs, spec_json, "sgld", CONFIG, 10.0, **paths, group_size=3)
    assert again[0]["started_at"] == first[0]["started_at"]  # not recomputed
    assert again[0]["llc_hat"] == first[0]["llc_hat"]
    assert again[1]["started_at"] > first[2]["started_at"]  # recomputed, same answer
    assert [r["llc_hat"] for r in again[1:]] == [r["llc_hat"] for r in first[1:]]
    assert json.loads((run_dirs[2] / "metrics.json").read_text())["llc_hat"] == first[2]["llc_hat"]
