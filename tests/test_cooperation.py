"""Two runs of the same study at once (the ``tune`` deployment triggered twice, a CLI run
beside a UI run): both finish without errors, together they stop at the requested count
(or one over, see below), neither reaps the other's live trials, and no run is computed
twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import optuna
from optuna.trial import TrialState

from lambda_hat.problems.specs import load_problem_set
from lambda_hat.settings import Settings
from lambda_hat.tuning.reaping import owner_id
from lambda_hat.tuning.storage import counted, finished_trials

from .conftest import REPO, sgld_methods

# Runs of a few seconds (20000 steps), 10 trials: both flows are tuning at the same time.
# One run per trial, no validation: this is about trials and their owners.
METHODS = sgld_methods(20000, 1.0e-6, 1.0e-4)
N_TRIALS = 10


def _start(env_dir, log_name: str) -> subprocess.Popen:
    argv = [
        sys.executable, str(REPO / "flows" / "tune.py"),
        "--problems", str(env_dir / "problems.yaml"), "--methods", "sgld",
        "--methods-file", str(env_dir / "methods.yaml"), "--n-trials", str(N_TRIALS),
        "--batch", "2", "--repeats", "1", "--validate-top-k", "0",
        "--reference-warmup", "100", "--reference-draws", "200",
    ]  # fmt: skip
    with open(env_dir / log_name, "w") as log:
        return subprocess.Popen(
            argv, cwd=env_dir, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT
        )


def test_two_runs_of_one_study_share_it(prefect_server, lambda_hat_env):
    spec = load_problem_set("smoke").problems[0]
    (lambda_hat_env / "problems.yaml").write_text(
        json.dumps({"problems": [spec.model_dump(mode="json")]})
    )
    (lambda_hat_env / "methods.yaml").write_text(METHODS)
    # Started together, as a deployment triggered twice would be.
    first = _start(lambda_hat_env, "first.log")
    second = _start(lambda_hat_env, "second.log")
    try:
        codes = [first.wait(timeout=900), second.wait(timeout=900)]
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    logs = [(lambda_hat_env / name).read_text() for name in ("first.log", "second.log")]
    assert codes == [0, 0], [text[-3000:] for text in logs]

    study = optuna.load_study(study_name=f"{spec.pid}:sgld", storage=Settings().storage_url())
    # Together they stop at the requested count. Each asks only while finished + live
    # trials < N; when both ask the last trial at the same moment (check, then ask, in two
    # processes) one more is run: at most one per extra driver.
    assert N_TRIALS <= finished_trials(study) <= N_TRIALS + 1
    assert not study.get_trials(states=(TrialState.RUNNING,))
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.trials]
    assert not [r for r in reasons if r.startswith(("stale", "taken over"))], reasons
    told = [t for t in study.trials if counted(t)]
    owners = {owner_id(t) for t in told}
    assert len(owners) == 2, owners  # both runs drove trials of the study
    run_ids = [t.user_attrs["run_ids"][0] for t in told]
    assert len(set(run_ids)) == len(run_ids) == len(told)  # no run computed twice
    assert "UpdateFinishedTrialError" not in logs[0] + logs[1]
