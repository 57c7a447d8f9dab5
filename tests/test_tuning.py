"""The Optuna driver (repeats, pruning, failures, reaping), objectives, settings and the
Parquet writer, without Prefect."""

import json
import multiprocessing
import socket
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from lambda_hat.results.tables import append_rows, read_rows, write_leaderboard
from lambda_hat.settings import Settings, mask_url
from lambda_hat.tuning.driver import Driver
from lambda_hat.tuning.kinds import Member
from lambda_hat.tuning.pruning import make_pruner
from lambda_hat.tuning.reaping import Owner
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.slots import TrialSlots
from lambda_hat.tuning.storage import (
    StorageError,
    StorageRetry,
    finished_trials,
    open_study,
    sampler_seed,
)
from lambda_hat.tuning.trials import MAX_ATTEMPTS, objective_value, study_seeds
from lambda_hat.tuning.validation import trial_counts

optuna.logging.set_verbosity(optuna.logging.WARNING)


def first_done(futures):
    return next(iter(wait(futures, return_when=FIRST_COMPLETED).done))


def make_driver(study, pid="p_test", **overrides):
    options = {
        "members": [Member(pid, "test", 3.0, 0.1)],
        "method": "sgld",
        "budget_sec": 10.0,
        **overrides,
    }
    return Driver(study, load_methods()["sgld"], **options)


def test_objectives():
    assert objective_value(3.4, 3.0, 0.1, "abs") == pytest.approx(0.4)
    # Huber: quadratic inside δ = k·se_ref, linear outside, continuous at δ.
    assert objective_value(3.05, 3.0, 0.1, "huber") == pytest.approx(0.05**2 / 0.2)
    assert objective_value(3.4, 3.0, 0.1, "huber") == pytest.approx(0.4 - 0.05)
    assert objective_value(3.1, 3.0, 0.1, "huber") == pytest.approx(0.05)
    assert objective_value(3.4, 3.0, 0.1, "huber", huber_k=10) == pytest.approx(0.16 / 2)


def test_driver_keeps_batch_in_flight_and_tells_each_as_it_finishes(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld")
    lock, running, peak, told_while_others_ran = threading.Lock(), [0], [0], []
    batch_full = threading.Event()

    def run(plan):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            if running[0] == 3:
                batch_full.set()
        if plan.trial_number < 3:  # the first batch meets, however slow the asks are
            batch_full.wait(timeout=60)
        time.sleep(0.3 if plan.trial_number % 3 == 0 else 0.05)  # unequal lengths
        with lock:
            running[0] -= 1
        return {"status": "ok", "llc_hat": 3.0 + plan.config["step_size"] * 100}

    def on_outcome(outcome, done, total):
        told_while_others_ran.append(running[0])

    with ThreadPoolExecutor(3) as pool:
        driver = make_driver(study, on_outcome=on_outcome, repeats=1, pruner="none")
        outcomes = driver.run(
            9, batch=3, submit=lambda p: pool.submit(run, p), first_done=first_done
        )
    assert len(outcomes) == 9 and finished_trials(study) == 9
    assert peak[0] == 3
    assert any(n > 0 for n in told_while_others_ran)  # told before the batch drained
    assert all(o.state == TrialState.COMPLETE for o in outcomes)
    assert len({o.runs[0].plan.run_id for o in outcomes}) == 9


def noisy_llc(plan):
    """A run whose llc_hat depends on its configuration and (a little) on its seed."""
    noise = ((plan.seed * 2654435761) % 1000) / 1000 - 0.5
    return {"status": "ok", "llc_hat": 3.0 + 1e3 * plan.config["step_size"] + 0.1 * noise}


def test_repeats_use_the_studys_common_seeds_and_the_objective_is_their_mean(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld")
    recorded = []
    with ThreadPoolExecutor(2) as pool:
        driver = make_driver(study, repeats=3, pruner="none", record=recorded.append)
        outcomes = driver.run(
            4, batch=2, submit=lambda p: pool.submit(noisy_llc, p), first_done=first_done
        )
    seeds = study_seeds("p_test:sgld", 3)
    assert len(recorded) == 4 * 3
    for outcome in outcomes:
        assert [run.plan.seed for run in outcome.runs] == seeds  # common random numbers
        assert [run.plan.repeat for run in outcome.runs] == [0, 1, 2]
        trial = study.trials[outcome.number]
        llc = [run.result["llc_hat"] for run in outcome.runs]
        assert trial.user_attrs["llc_hats"] == pytest.approx(llc)
        assert trial.value == pytest.approx(sum(abs(v - 3.0) for v in llc) / 3)
        assert trial.user_attrs["llc_hat_mean"] == pytest.approx(sum(llc) / 3)
        assert trial.user_attrs["bias"] == pytest.approx(sum(llc) / 3 - 3.0)
        assert trial.user_attrs["objective_se"] > 0 and trial.user_attrs["llc_hat_sd"] > 0
        assert trial.user_attrs["run_ids"] == [run.plan.run_id for run in outcome.runs]
    assert len({run.plan.run_id for run in recorded}) == 12
    assert len({run.plan.config_id for run in recorded}) == 4


def test_a_bad_configuration_is_pruned_after_two_repeats_and_submits_no_more(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld", pruner=make_pruner("wilcoxon"))
    study.enqueue_trial({"step_size": 1e-6, "batch_size": 64, "decay_exponent": 0.0})  # good
    study.enqueue_trial({"step_size": 5e-3, "batch_size": 64, "decay_exponent": 0.0})  # bad
    submitted = []

    def run(plan):
        submitted.append(plan)
        return noisy_llc(plan)

    with ThreadPoolExecutor(2) as pool:
        driver = make_driver(study, repeats=3, pruner="wilcoxon")
        outcomes = driver.run(
            4, batch=1, submit=lambda p: pool.submit(run, p), first_done=first_done
        )
    assert finished_trials(study) == 4  # pruned trials count: the study reaches its count
    bad = study.trials[1]
    assert bad.state == TrialState.PRUNED and bad.user_attrs["status"] == "pruned"
    assert len([p for p in submitted if p.trial_number == 1]) == 2  # no third repeat
    assert bad.user_attrs["repeats_done"] == 2 and sorted(bad.intermediate_values) == [0, 1]
    assert outcomes[1].state == TrialState.PRUNED and len(outcomes[1].runs) == 2
    assert study.trials[0].state == TrialState.COMPLETE


def run_scripted(study, script, n_trials, **driver_options):
    """Run the driver with runs that return (or raise) the scripted results in order."""
    results = iter(script)

    def run(plan):
        result = next(results)
        if isinstance(result, Exception):
            raise result
        return result

    options = {"repeats": 1, "pruner": "none", **driver_options}
    with ThreadPoolExecutor(1) as pool:
        driver = make_driver(study, **options)
        return driver.run(
            n_trials, batch=1, submit=lambda p: pool.submit(run, p), first_done=first_done
        )


def test_failures_are_told_fail_with_a_reason_and_lost_runs_run_again(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld")
    recorded = []
    script = [
        {"status": "diverged", "llc_hat": None, "error": "chunk 0: non-finite loss"},
        {"status": "error", "llc_hat": None, "error": "ValueError: boom"},
        RuntimeError("worker lost"),  # infrastructure: the same run is submitted again
        {"status": "ok", "llc_hat": 3.2},
        {"status": "ok", "llc_hat": float("nan")},  # never an inf/nan objective
    ]
    outcomes = run_scripted(study, script, 4, record=recorded.append)
    trials = study.trials
    assert [t.user_attrs.get("fail_reason") for t in trials] == [
        "repeat 0: chunk 0: non-finite loss",
        "repeat 0: ValueError: boom",
        None,
        "repeat 0: status ok",
    ]
    assert [t.state for t in trials] == [
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.FAIL,
    ]
    assert study.best_value == pytest.approx(0.2)
    assert [o.objective for o in outcomes] == [None, None, pytest.approx(0.2), None]
    assert finished_trials(study) == 4
    # The lost run was recorded once, after it ran again: 4 rows for 4 runs.
    assert len(recorded) == 4
    assert [r.plan.run_id for r in recorded] == [o.runs[0].plan.run_id for o in outcomes]
    assert all(t.values is None for t in trials if t.state == TrialState.FAIL)


def test_a_run_lost_every_time_fails_its_trial_after_max_attempts(tmp_path):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld")
    script = [RuntimeError(f"killed {i}") for i in range(MAX_ATTEMPTS)]
    outcomes = run_scripted(study, script, 1)
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    assert outcomes[0].reason == f"repeat 0: RuntimeError: killed {MAX_ATTEMPTS - 1}"
    assert finished_trials(study) == 1


def _connection_refused():
    # What SQLAlchemy raises while the database restarts (the real restart is in
    # test_faults.py; here only the retry logic is under test).
    raise sqlalchemy.exc.OperationalError("SELECT 1", {}, OSError("connection refused"))


def test_storage_retry_rides_out_a_short_outage_and_bounds_a_long_one():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) <= 2:
            _connection_refused()
        return "ok"

    assert StorageRetry(30)("a query", flaky) == "ok" and len(calls) == 3
    started = time.monotonic()
    with pytest.raises(StorageError) as error:
        StorageRetry(1.0)("telling a result", _connection_refused)
    assert time.monotonic() - started < 3
    assert str(error.value) == (
        "optuna_storage: telling a result failed for 1 s "
        "(LAMBDA_HAT_BUDGETS__STORAGE_RETRY_SEC); last error: connection refused"
    )


def test_an_ask_cut_off_half_way_leaves_no_running_or_waiting_trial(tmp_path, monkeypatch):
    study = open_study(f"sqlite:///{tmp_path}/o.db", "p_test:sgld")
    real_ask, cut = study.ask, []

    def ask_cut_off_once(*args, **kwargs):
        trial = real_ask(*args, **kwargs)  # created in the storage ...
        if not cut:
            cut.append(trial.number)
            _connection_refused()  # ... but the answer never came back
        return trial

    monkeypatch.setattr(study, "ask", ask_cut_off_once)
    run_scripted(study, [{"status": "ok", "llc_hat": 3.1}] * 2, 2)
    states = {t.number: t.state for t in study.trials}
    assert TrialState.RUNNING not in states.values() and TrialState.WAITING not in states.values()
    assert study.trials[cut[0]].user_attrs["fail_reason"] == "orphan: ask cut off"
    assert finished_trials(study) == 2


def test_stale_running_trials_are_reaped_and_rerun_with_the_same_run_ids(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    study = open_study(url, "p_test:sgld")
    space = load_methods()["sgld"]
    # A dead driver (a process of this host that no longer runs) left one trial RUNNING.
    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan = study.ask(space.distributions())
    # Its heartbeat is fresh; the host tells that its process is gone.
    orphan.set_user_attr("owner", Owner(socket.gethostname(), gone.pid, "x").claim(time.time()))
    orphan_params = dict(orphan.params)

    seen = []
    with ThreadPoolExecutor(1) as pool:
        outcomes = make_driver(open_study(url, "p_test:sgld"), repeats=2, pruner="none").run(
            3,
            batch=1,
            submit=lambda p: pool.submit(lambda: seen.append(p) or {"status": "ok", "llc_hat": 3}),
            first_done=first_done,
        )
    assert len(outcomes) == 3
    assert seen[0].hyperparams == orphan_params
    assert [p.seed for p in seen[:2]] == study_seeds("p_test:sgld", 2)
    trials = open_study(url, "p_test:sgld").trials
    states = [t.state for t in trials]
    assert states[0] == TrialState.FAIL and TrialState.RUNNING not in states
    assert finished_trials(study) == 3
    # Alone (the dead driver's rerun enqueued by this one): nothing dropped or reseeded.
    assert states.count(TrialState.FAIL) == 1, [t.user_attrs for t in trials]


def test_a_half_told_trial_is_rerun_and_counted_once(tmp_path):
    url = f"sqlite:///{tmp_path}/o.db"
    study = open_study(url, "p_test:sgld")
    space = load_methods()["sgld"]
    # The driver set the trial's status, then died before tell: RUNNING with a status.
    gone = subprocess.Popen(["true"])
    gone.wait()
    half = study.ask(space.distributions())
    half.set_user_attr("owner", Owner(socket.gethostname(), gone.pid, "x").claim(time.time()))
    half.set_user_attr("status", "ok")
    with ThreadPoolExecutor(1) as pool:
        outcomes = make_driver(open_study(url, "p_test:sgld"), repeats=1, pruner="none").run(
            3,
            batch=1,
            submit=lambda p: pool.submit(lambda: {"status": "ok", "llc_hat": 3}),
            first_done=first_done,
        )
    study = open_study(url, "p_test:sgld")
    assert len(outcomes) == 3 and finished_trials(study) == 3
    reaped = study.trials[0]
    assert reaped.state == TrialState.FAIL and reaped.user_attrs["requeued"] is True
    assert study.trials[1].params == half.params  # its configuration ran again
    assert trial_counts(study)["done"] == 3


def test_settings_from_env_and_secrets_masked(monkeypatch):
    monkeypatch.setenv("LAMBDA_HAT_OPTUNA_STORAGE", "postgresql+psycopg://lh:s3cret@db:5432/lh")
    monkeypatch.setenv("LAMBDA_HAT_BUDGETS__TRIAL_SEC", "30")
    settings = Settings()
    assert settings.budgets.trial_sec == 30
    assert settings.storage_url() == "postgresql+psycopg://lh:s3cret@db:5432/lh"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.public())
    assert settings.public()["optuna_storage"] == "postgresql+psycopg://lh:***@db:5432/lh"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def _append_many(path, worker):
    for i in range(25):
        append_rows(path, [{"run_id": f"r_{worker}_{i}", "objective": float(i)}])


def test_two_processes_appending_at_once_lose_no_rows(tmp_path):
    path = tmp_path / "runs.parquet"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(path, w)) for w in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    rows = read_rows(path)
    assert len(rows) == 50 and len({row["run_id"] for row in rows}) == 50


def test_studies_share_the_clusters_slots_fairly_and_all_finish(tmp_path):
    """Three studies at once on a cluster of capacity 2: never more than 2 trials in
    flight over all of them, every study gets its turn, and each finishes its count."""
    url = f"sqlite:///{tmp_path}/o.db"
    slots, lock, in_flight, peak = TrialSlots(2), threading.Lock(), [0], [0]
    order: list[str] = []

    def run(plan):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            order.append(plan.run_id)
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        return {"status": "ok", "llc_hat": 3.0}

    def drive(name):
        with ThreadPoolExecutor(4) as pool:
            driver = make_driver(
                open_study(url, name), repeats=1, pruner="none", slots=slots, pid="p_test"
            )
            return driver.run(4, batch=2, submit=lambda p: pool.submit(run, p),
                              first_done=first_done)  # fmt: skip

    names = ["p_a:sgld", "p_b:sgld", "p_c:sgld"]
    for name in names:  # (the storage's tables, created once; the flow does the same)
        open_study(url, name)
    with ThreadPoolExecutor(3) as studies:
        results = list(studies.map(drive, names))
    assert [len(outcomes) for outcomes in results] == [4, 4, 4]
    assert all(finished_trials(open_study(url, name)) == 4 for name in names)
    assert peak[0] <= 2  # the cluster's capacity, over all studies
    assert all(slots.held(name) == 0 for name in names)


def test_two_drivers_started_together_do_not_propose_the_same_trials(tmp_path):
    """Both read the same trial count when they start, so their samplers are seeded alike;
    the one whose first ask is not numbered as it expected drops it and reseeds by its
    number. A driver alone keeps the seed (its proposals do not change)."""
    url = f"sqlite:///{tmp_path}/o.db"
    open_study(url, "p_test:sgld")  # the schema, once
    start = threading.Barrier(2)

    def drive() -> None:
        driver = make_driver(open_study(url, "p_test:sgld"), repeats=1, pruner="none")
        original_ask = driver._ask_once

        def ask_once(asked):
            if not asked:
                start.wait(10)  # both have read the trial count before either asks
            return original_ask(asked)

        driver._ask_once = ask_once
        with ThreadPoolExecutor(1) as pool:
            driver.run(
                5, batch=1, first_done=first_done,
                submit=lambda plan: pool.submit(lambda: {"status": "ok", "llc_hat": 3.0}),
            )  # fmt: skip

    with ThreadPoolExecutor(2) as drivers:
        for future in [drivers.submit(drive), drivers.submit(drive)]:
            future.result()
    trials = optuna.load_study(study_name="p_test:sgld", storage=url).trials
    counted_trials = [t for t in trials if t.user_attrs.get("status")]
    params = [json.dumps(t.params, sort_keys=True) for t in counted_trials]
    assert len(set(params)) == len(params) >= 5
    dropped = [t for t in trials if "reseeded" in t.user_attrs.get("fail_reason", "")]
    assert len(dropped) == 1  # the second to ask, once

    # Alone, a driver proposes what a fresh sampler seeded by the study and its trial
    # count does.
    alone = open_study(f"sqlite:///{tmp_path}/alone.db", "p_test:sgld")
    with ThreadPoolExecutor(1) as pool:
        make_driver(alone, repeats=1, pruner="none").run(
            1, batch=1, first_done=first_done,
            submit=lambda plan: pool.submit(lambda: {"status": "ok", "llc_hat": 3.0}),
        )  # fmt: skip
    seed = sampler_seed("p_test:sgld", 0)
    reference = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    expected = reference.ask(load_methods()["sgld"].distributions()).params
    assert alone.trials[0].params == expected


def test_a_trial_asked_but_never_claimed_by_a_dead_driver_is_reaped(tmp_path, monkeypatch):
    """A driver killed between asking a trial and claiming it leaves it RUNNING with no
    owner. The next driver reaps it once it is older than the claim grace, and reruns its
    parameters; a trial asked after that driver started is not its to judge."""
    from lambda_hat.tuning import reaping

    url = f"sqlite:///{tmp_path}/o.db"
    study = open_study(url, "p_test:sgld")
    unclaimed = study.ask(load_methods()["sgld"].distributions())
    monkeypatch.setattr(reaping, "CLAIM_GRACE_SEC", 0.0)
    with ThreadPoolExecutor(1) as pool:
        outcomes = make_driver(open_study(url, "p_test:sgld"), repeats=1, pruner="none").run(
            2,
            batch=1,
            submit=lambda p: pool.submit(lambda: {"status": "ok", "llc_hat": 3}),
            first_done=first_done,
        )
    trials = open_study(url, "p_test:sgld").trials
    assert len(outcomes) == 2 and TrialState.RUNNING not in {t.state for t in trials}
    assert trials[unclaimed.number].user_attrs["fail_reason"].startswith("stale")
    assert outcomes[0].hyperparams == unclaimed.params  # its configuration ran again
    assert finished_trials(open_study(url, "p_test:sgld")) == 2
    # A driver killed inside its ask leaves a trial without parameters: reaped with its
    # reason, nothing to rerun, never counted.
    empty = open_study(url, "p_test:sgld").ask()
    assert reaping.reap_stale_trials(open_study(url, "p_test:sgld"), 300.0, None, 10**6) == 0
    reaped = open_study(url, "p_test:sgld").trials[empty.number]
    assert reaped.state == TrialState.FAIL
    assert reaped.user_attrs["fail_reason"] == "stale: its driver died during the ask"
    assert finished_trials(open_study(url, "p_test:sgld")) == 2
    # Without the grace elapsed, an unclaimed trial may be a live driver's ask in progress.
    monkeypatch.setattr(reaping, "CLAIM_GRACE_SEC", 3600.0)
    fresh = open_study(url, "p_test:sgld").ask(load_methods()["sgld"].distributions())
    assert reaping.reap_stale_trials(open_study(url, "p_test:sgld"), 300.0, None, 10**6) == 0
    assert open_study(url, "p_test:sgld").trials[fresh.number].state == TrialState.RUNNING


def _create_after(barrier, url):
    from lambda_hat.tuning.storage import init_storage

    barrier.wait()
    init_storage(url)


def test_runs_started_together_create_a_fresh_sqlite_storage_once(tmp_path):
    # Two runs of one deployment triggered together: without the lock, about one process in
    # three failed here ("table studies already exists", UNIQUE alembic_version).
    context = multiprocessing.get_context("spawn")
    for attempt in range(3):
        url = f"sqlite:///{tmp_path}/o{attempt}.db"
        barrier = context.Barrier(4)
        processes = [context.Process(target=_create_after, args=(barrier, url)) for _ in range(4)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        assert [process.exitcode for process in processes] == [0, 0, 0, 0]
        assert finished_trials(open_study(url, "p_test:sgld")) == 0


def test_a_leaderboard_row_from_an_earlier_state_of_its_study_never_replaces_a_later_one(
    tmp_path,
):
    # Two campaigns share a study: the one that ran its 5 trials writes first; the one that
    # counted it at 2 trials (and ran none) finishes later and must not write back 2.
    path = tmp_path / "leaderboard.parquet"
    row = {"pid": "p_x", "method": "sgld", "trials_pruned": 0, "trials_failed": 0}
    other = {**row, "pid": "p_y", "trials_done": 1}
    write_leaderboard(path, [{**row, "trials_done": 5, "config_id": "c_late"}, other])
    write_leaderboard(path, [{**row, "trials_done": 2, "config_id": "c_early"}])
    rows = {r["pid"]: r for r in read_rows(path)}
    assert (rows["p_x"]["trials_done"], rows["p_x"]["config_id"]) == (5, "c_late")
    write_leaderboard(path, [{**row, "trials_done": 5, "trials_failed": 1, "config_id": "c_6"}])
    rows = {r["pid"]: r for r in read_rows(path)}
    assert rows["p_x"]["config_id"] == "c_6" and rows["p_y"]["trials_done"] == 1


def test_a_study_is_never_scored_against_two_references(tmp_path):
    from lambda_hat.tuning.pinning import ReferenceChanged, pin_references

    url = f"sqlite:///{tmp_path}/o.db"
    pin_references(open_study(url, "p_x:sgld"), [Member("p_x", "x", 3.0, 0.1)])
    # A later run (another process: the study read back from the storage): a pooled
    # extension of the same reference is within its noise and goes on...
    pin_references(open_study(url, "p_x:sgld"), [Member("p_x", "x", 3.1, 0.07)])
    # ... an edited or other reference 950 SE away does not.
    with pytest.raises(ReferenceChanged) as error:
        pin_references(open_study(url, "p_x:sgld"), [Member("p_x", "x", 98.0, 0.1)])
    assert "\n" not in str(error.value) and "p_x:sgld" in str(error.value)
    assert open_study(url, "p_x:sgld").user_attrs["references"] == {
        "p_x": {"llc_ref": 3.0, "se_ref": 0.1}
    }
