"""Recipes across a family of problems, and the transfer of recommendations to held-out
problems: the recipe driver with stand-in runs, then the flow on a tiny family against the
real Prefect server (LocalCluster, SQLite Optuna, BlackJAX-free SGLD runs)."""

import json
import math
import statistics
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import optuna
import pytest
import yaml

from flows.tune import tune
from lambda_hat.problems.specs import SpecError, check_held_out, load_problem_set
from lambda_hat.problems.targets import build_problem
from lambda_hat.results.tables import read_rows
from lambda_hat.samplers.run_method import run_trial
from lambda_hat.settings import Settings
from lambda_hat.tuning.driver import Driver
from lambda_hat.tuning.kinds import Member, Recipe
from lambda_hat.tuning.pruning import make_pruner
from lambda_hat.tuning.recipes import recipe_space
from lambda_hat.tuning.search_space import MethodSpace, load_methods
from lambda_hat.tuning.stats import family_error
from lambda_hat.tuning.storage import open_study
from lambda_hat.tuning.trials import config_id_for, study_seeds

from .conftest import sgld_methods
from .test_flows import SMALL_REFERENCE, artifact_keys

MEMBERS = [
    Member("p_a", "a", 2.0, 0.01),
    Member("p_b", "b", 4.0, 0.01),
    Member("p_c", "c", 1.0, 0.01),
]
SPACE = MethodSpace(
    method="sgld",
    fixed={"num_steps": 100},
    space={"step_size": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True}},
)


def _fake_run(plan):
    """Stands in for a run: relative error 0.1 at step size 1e-4, growing away from it,
    plus a little seed noise; a different scale on each problem."""
    ref = {m.pid: m.llc_ref for m in MEMBERS}[plan.pid]
    rel = 0.1 + abs(math.log10(plan.config["step_size"]) + 4) / 2 + (plan.seed % 7) / 700
    return {"status": "ok", "llc_hat": ref * (1 + rel)}


def _drive(study, n_trials, pruner="none"):
    first = lambda futures: next(iter(wait(futures, return_when=FIRST_COMPLETED).done))  # noqa: E731
    with ThreadPoolExecutor(2) as pool:
        driver = Driver(
            study, SPACE, method="sgld", members=MEMBERS, budget_sec=1.0,
            kind=Recipe("demo"), repeats=2, pruner=pruner,
        )  # fmt: skip
        return driver.run(
            n_trials, batch=1, submit=lambda plan: pool.submit(_fake_run, plan), first_done=first
        )


def test_a_recipe_trial_is_told_the_mean_over_problems_of_its_relative_errors():
    study = open_study("sqlite:///:memory:", "recipe-demo:sgld", pruner=make_pruner("none"))
    study.enqueue_trial({"step_size": 1e-4})
    (outcome,) = _drive(study, 1)
    assert len(outcome.runs) == len(MEMBERS) * 2  # every problem × repeat
    per_problem = {}
    for run in outcome.runs:
        member = next(m for m in MEMBERS if m.pid == run.plan.pid)
        per_problem.setdefault(member.pid, []).append(
            abs(run.result["llc_hat"] - member.llc_ref) / member.llc_ref
        )
    expected = statistics.fmean(statistics.fmean(v) for v in per_problem.values())
    assert outcome.objective == pytest.approx(expected)
    assert study.trials[0].value == pytest.approx(expected)
    # Repeat k of every problem runs on the study's k-th common seed.
    seeds = study_seeds("recipe-demo:sgld", 2)
    assert sorted({(r.plan.repeat, r.plan.seed) for r in outcome.runs}) == list(enumerate(seeds))
    # The pruner saw one step per problem: that problem's mean relative error.
    steps = study.trials[0].intermediate_values
    assert steps == pytest.approx(
        {i: statistics.fmean(per_problem[m.pid]) for i, m in enumerate(MEMBERS)}
    )


def test_a_losing_recipe_is_pruned_after_the_first_problems():
    study = open_study("sqlite:///:memory:", "recipe-demo:sgld", pruner=make_pruner("wilcoxon"))
    study.enqueue_trial({"step_size": 1e-4})
    study.enqueue_trial({"step_size": 1e-6})  # 2 decades off on every problem
    good, bad = _drive(study, 2, pruner="wilcoxon")
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert bad.state == optuna.trial.TrialState.PRUNED
    assert len(bad.runs) == 2 * 2  # the first two problems' repeats, not the third's
    assert {run.plan.pid for run in bad.runs} == {"p_a", "p_b"}


def test_family_error_interval_is_the_seed_noise_with_the_problems_fixed():
    summary = family_error({"a": [0.1, 0.3], "b": [0.2, 0.2, 0.2]})
    assert summary["mean"] == pytest.approx((0.2 + 0.2) / 2)
    assert summary["se"] == pytest.approx(math.sqrt(0.02 / 2 + 0.0) / 2)
    assert summary["ci_low"] < summary["mean"] < summary["ci_high"]
    assert family_error({"a": [0.1], "b": [0.2, 0.3]})["ci_low"] is None  # one run: no interval


def test_a_recipe_tunes_sgld_steps_per_n_beta_unless_told_otherwise():
    space = recipe_space(load_methods()["sgld"])
    assert space.fixed["step_size_scale"] == "per_nbeta"
    told = MethodSpace(method="sgld", fixed={"step_size_scale": "absolute"}, space=SPACE.space)
    assert recipe_space(told) == told
    assert recipe_space(load_methods()["psgld"]) == load_methods()["psgld"]


def test_a_held_out_problem_must_not_be_a_tuning_problem():
    family = load_problem_set("dln-family")
    with pytest.raises(SpecError, match="holdout: .* is the tuning problem"):
        check_held_out(family, family)
    held_out = load_problem_set("dln-family-holdout")
    check_held_out(family, held_out)
    # Each held-out problem is larger than every tuning problem in some way.
    tuning = family.problems
    for problem in held_out.problems:
        assert (
            problem.data.n > max(p.data.n for p in tuning)
            or len(problem.widths) > max(len(p.widths) for p in tuning)
            or max(problem.widths) > max(max(p.widths) for p in tuning)
        ), problem.name


RECIPE_METHODS = sgld_methods(600, 1.0e-3, 1.0e-1)


def _tiny(name, widths, rank, n=400):
    return {"name": name, "model": {"family": "dln", "widths": widths}, "teacher": {"rank": rank},
            "data": {"n": n}}  # fmt: skip


def test_recipe_flow_with_held_out_problems_and_its_recipe_file(prefect_server, lambda_hat_env):
    family = lambda_hat_env / "tiny_family.yaml"
    family.write_text(json.dumps({"problems": [_tiny("a", [2, 2], 1), _tiny("b", [3, 2, 2], 1)]}))
    held = lambda_hat_env / "tiny_held.yaml"
    held.write_text(json.dumps({"problems": [_tiny("c", [3, 2, 3], 1, n=800)]}))
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(RECIPE_METHODS)
    result = tune(
        problems=str(family), methods=["sgld"], n_trials=3, batch=2, repeats=2, pruner="none",
        methods_file=str(methods_file), validate_top_k=2, validation_seeds=2, recipe=True,
        holdout=str(held), **SMALL_REFERENCE,
    )  # fmt: skip

    name = "recipe-tiny_family:sgld"
    study = optuna.load_study(study_name=name, storage=Settings().storage_url())
    pids = [p.pid for p in load_problem_set(str(family)).problems]
    assert study.user_attrs["pids"] == pids
    rows = read_rows(lambda_hat_env / "results" / "runs.parquet")
    search = [r for r in rows if r["stage"] == "search" and r["study_name"] == name]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    for trial in complete:
        # The objective recomputed from the Parquet rows: mean over problems of the mean
        # relative error over repeats.
        mine = [r for r in search if r["trial_number"] == trial.number]
        assert sorted({r["pid"] for r in mine}) == sorted(pids) and len(mine) == 2 * 2
        per_problem = [
            statistics.fmean(
                abs(r["llc_hat"] - r["llc_ref"]) / r["llc_ref"] for r in mine if r["pid"] == pid
            )
            for pid in pids
        ]
        assert trial.value == pytest.approx(statistics.fmean(per_problem))
        assert all(r["trial_objective"] == pytest.approx(trial.value) for r in mine)

    (board,) = [b for b in result["leaderboard"] if b["kind"] == "recipe"]
    validation = [
        r for r in rows if r["stage"] == "validation" and r["config_id"] == board["config_id"]
    ]
    assert {r["pid"] for r in validation} == set(pids) and len(validation) == 2 * 2
    expected = statistics.fmean(
        statistics.fmean(r["rel_error"] for r in validation if r["pid"] == pid) for pid in pids
    )
    assert board["validated_rel_error_mean"] == pytest.approx(expected)
    assert board["validated_rel_error_ci_low"] <= expected <= board["validated_rel_error_ci_high"]

    # Transfer: the recipe on the held-out problem, on fresh seeds, against its own reference.
    (held_pid,) = [p.pid for p in load_problem_set(str(held)).problems]
    transfer = [r for r in rows if r["stage"] == "transfer"]
    assert {r["pid"] for r in transfer} == {held_pid} and len(transfer) == 2
    assert {r["config_id"] for r in transfer} == {board["config_id"]}
    used = {r["seed"] for r in rows if r["stage"] in ("search", "validation")}
    assert not {r["seed"] for r in transfer} & used
    assert all(r["llc_ref"] != search[0]["llc_ref"] for r in transfer)
    assert board["transfer_rel_error_mean"] == pytest.approx(
        statistics.fmean(r["rel_error"] for r in transfer)
    )
    assert board["n_transfer_problems"] == 1
    assert "transfer" in (lambda_hat_env / "artifacts" / "report" / "index.html").read_text()
    assert artifact_keys("progress-recipe-tiny-family-sgld")

    # The recipe file: a methods file of fixed values that reproduces the runs.
    (path,) = result["recipes"]
    assert path.endswith("recipes/tiny_family-sgld.yaml")
    document = yaml.safe_load(Path(path).read_text())
    assert document["evidence"]["validated_rel_error"]["mean"] == pytest.approx(expected)
    assert document["evidence"]["transfer"]["rel_error"]["mean"] == pytest.approx(
        board["transfer_rel_error_mean"]
    )
    space = load_methods(path)["sgld"]
    assert space.space == {}
    config = space.config({})
    assert config.step_size_scale == "per_nbeta"
    assert config_id_for("sgld", config.model_dump(mode="json")) == board["config_id"]
    row = transfer[0]
    spec = load_problem_set(str(held)).problems[0]
    again = run_trial(
        build_problem(spec), "sgld", config, budget_sec=row["budget_sec"], seed=row["seed"]
    )
    assert again.llc_hat == pytest.approx(row["llc_hat"], rel=1e-9)
