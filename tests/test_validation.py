"""Validation without Prefect: top-k distinct configurations, fresh seeds disjoint from
the search's, the interval, and the leaderboard row computed from the run records."""

import statistics
from concurrent.futures import Future, ThreadPoolExecutor

import optuna
import pytest
from scipy import stats

from lambda_hat.tuning.kinds import Member, PerProblem
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.storage import open_study
from lambda_hat.tuning.trials import study_seeds
from lambda_hat.tuning.validation import (
    Candidate,
    leaderboard_row,
    run_all,
    top_configurations,
    trial_counts,
    validation_plans,
)

from .test_tuning import first_done, make_driver, noisy_llc

optuna.logging.set_verbosity(optuna.logging.WARNING)

MEMBER = Member("p_test", "test", 3.0, 0.1)


def test_validation_reruns_the_top_k_on_fresh_seeds_and_the_row_matches_the_records(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld")
    space = load_methods()["sgld"]
    best = {"step_size": 1e-6, "batch_size": 64, "decay_exponent": 0.0}
    for params in (best, best):  # the same configuration twice: it must be validated once
        study.enqueue_trial(params)
    records = []
    with ThreadPoolExecutor(2) as pool:
        submit = lambda plan: pool.submit(noisy_llc, plan)  # noqa: E731
        make_driver(study, repeats=3, pruner="none").run(
            6, batch=2, submit=submit, first_done=first_done
        )
        candidates = top_configurations(study, 3)
        plans = validation_plans(
            candidates, space, study_name="p_test:sgld", pids=["p_test"], method="sgld",
            seeds=5, budget_sec=10.0,
        )  # fmt: skip
        submitted = []

        def submit_group(group):
            submitted.append(group)
            return pool.submit(lambda: [noisy_llc(plan) for plan in group])

        outcomes = run_all(
            plans, submit_group=submit_group, first_done=first_done, record=records.append,
            judge=lambda plan, result: PerProblem().judge(plan, result, MEMBER),
        )  # fmt: skip
    assert len({c.config_id for c in candidates}) == 3
    assert candidates[0].hyperparams == best  # noisy_llc: the smallest step is best
    values = [c.search_objective for c in candidates]
    assert values == sorted(values)
    assert len(outcomes) == len(records) == 3 * 5
    # One submission per configuration: its 5 seeds together, outcomes still in plan order.
    assert [len(group) for group in submitted] == [5, 5, 5]
    assert all(len({plan.config_id for plan in group}) == 1 for group in submitted)
    assert [outcome.plan for outcome in outcomes] == plans
    search_seeds = set(study_seeds("p_test:sgld", 100))
    fresh = {r.plan.seed for r in records}
    assert len(fresh) == 5 and not fresh & search_seeds
    assert all(r.plan.stage == "validation" and r.plan.repeat is None for r in records)

    rows = [
        {"config_id": r.plan.config_id, "abs_error": r.abs_error, "llc_hat": r.result["llc_hat"]}
        for r in records
    ]
    row = leaderboard_row(
        study_name="p_test:sgld", method="sgld", kind=PerProblem(), members=[MEMBER],
        candidates=candidates, validation_rows=rows, counts=trial_counts(study),
    )  # fmt: skip
    assert row["problem_name"] == "test" and row["pid"] == "p_test" and row["kind"] == "problem"
    # The recommended configuration has the lowest validated error, as the rows give it.
    by_config = {}
    for r in rows:
        by_config.setdefault(r["config_id"], []).append(r["abs_error"])
    means = {cid: statistics.fmean(errors) for cid, errors in by_config.items()}
    chosen = min(means, key=means.get)
    errors = by_config[chosen]
    half = stats.t.ppf(0.975, 4) * statistics.stdev(errors) / 5**0.5
    assert row["config_id"] == chosen and row["n_validation_runs"] == 5
    assert row["validated_error_mean"] == pytest.approx(means[chosen])
    assert row["validated_error_ci_high"] == pytest.approx(means[chosen] + half)
    assert row["validated_error_ci_low"] == pytest.approx(max(means[chosen] - half, 0))
    llc = [r["llc_hat"] for r in rows if r["config_id"] == chosen]
    assert row["validated_bias"] == pytest.approx(statistics.fmean(llc) - 3.0)
    assert row["validated_sd"] == pytest.approx(statistics.stdev(llc))
    assert row["trials_done"] == 6


def test_no_complete_trial_means_no_candidate_and_an_empty_row(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld")
    assert top_configurations(study, 3) == []
    row = leaderboard_row(
        study_name="p_test:sgld", method="sgld", kind=PerProblem(), members=[MEMBER],
        candidates=[], validation_rows=[], counts={},
    )  # fmt: skip
    assert row["config_id"] is None and row["validated_error_mean"] is None


def test_a_lost_group_is_submitted_again_and_its_runs_keep_their_places():
    plans = validation_plans(
        [Candidate("c_a", {"step_size": 1e-6}, 0, 0.1, None),
         Candidate("c_b", {"step_size": 1e-5}, 1, 0.2, None)],
        load_methods()["sgld"], study_name="p_test:sgld", pids=["p_test"], method="sgld",
        seeds=3, budget_sec=10.0,
    )  # fmt: skip
    calls = []

    def submit_group(group):
        calls.append([plan.attempt for plan in group])
        future = Future()
        if group[0].hyperparams["step_size"] == 1e-5 and group[0].attempt == 1:
            future.set_exception(OSError("worker lost"))  # the whole task is lost
        else:
            future.set_result([noisy_llc(plan) for plan in group])
        return future

    outcomes = run_all(
        plans, submit_group=submit_group, first_done=lambda futures: futures[0],
        judge=lambda plan, result: PerProblem().judge(plan, result, MEMBER),
    )  # fmt: skip
    assert calls == [[1, 1, 1], [1, 1, 1], [2, 2, 2]]
    assert [o.plan.run_id for o in outcomes] == [plan.run_id for plan in plans]
    assert all(o.result["status"] == "ok" for o in outcomes)
    assert [o.plan.attempt for o in outcomes] == [1, 1, 1, 2, 2, 2]
