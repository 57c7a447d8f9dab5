"""One (problem, method) study: trials made of repeated runs, pruning between repeats, and
the ask → submit → tell driver.

A *trial* is one configuration. It is judged on ``repeats`` *runs*; repeat k of every trial
of a study uses the study's k-th common seed, so configurations are compared on the same
noise (common random numbers). The trial's objective is the mean of its runs' objectives.
Runs are the unit of work: each is submitted on its own (they spread over workers) and is
cached by its run id. Between repeats the pruner may stop a losing trial (told PRUNED);
the runs it did are still recorded.

The driver knows nothing about Prefect or Dask: it is given ``submit(run_plan) -> future``
and ``first_done(futures) -> future``, keeps ``batch`` trials in flight, and tells Optuna a
trial as soon as its last run finishes. Only this process talks to the Optuna storage.

>>> import optuna
>>> from concurrent.futures import ThreadPoolExecutor, wait, FIRST_COMPLETED
>>> from lambda_hat.search_space import load_methods
>>> from lambda_hat.storage import open_study, finished_trials
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = open_study("sqlite:///:memory:", "p_demo:sgld")
>>> space = load_methods()["sgld"]
>>> def fake_run(plan):   # stands in for a real run: llc_hat grows with log(step size)
...     import math
...     return {"status": "ok", "llc_hat": 3 + math.log10(plan.config["step_size"]) / 4}
>>> with ThreadPoolExecutor(2) as pool:
...     driver = Driver(study, space, pid="p_demo", method="sgld", budget_sec=1.0,
...                     llc_ref=2.0, se_ref=0.1, repeats=3, pruner="none")
...     first = lambda fs: next(iter(wait(fs, return_when=FIRST_COMPLETED).done))
...     outcomes = driver.run(4, batch=2, submit=lambda plan: pool.submit(fake_run, plan),
...                           first_done=first)
>>> len(outcomes), finished_trials(study), [len(o.runs) for o in outcomes]
(4, 4, [3, 3, 3, 3])
"""

from __future__ import annotations

import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Literal

import optuna
from optuna.trial import TrialState

from lambda_hat.reaping import (  # noqa: F401
    Heartbeat,
    Owner,
    _requeue,
    enqueued,
    fail_orphans,
    live_running,
    reap_stale_trials,
)
from lambda_hat.runners.run_method import run_id_for
from lambda_hat.search_space import MethodSpace
from lambda_hat.slots import TrialSlots

# Re-exported: callers and docs find the trial and storage helpers here too.
from lambda_hat.storage import (  # noqa: F401
    StorageError,
    StorageRetry,
    best_value,
    check_storage,
    engine_kwargs,
    finished_trials,
    open_study,
    reseeded,
)
from lambda_hat.trials import (  # noqa: F401
    MAX_ATTEMPTS,
    ObjectiveKind,
    Outcome,
    RunOutcome,
    RunPlan,
    Stage,
    config_id_for,
    judge_run,
    objective_value,
    resolve,
    study_seeds,
    summarize_runs,
)

log = logging.getLogger(__name__)

PrunerKind = Literal["wilcoxon", "median", "none"]


# With K repeats a one-sided Wilcoxon signed-rank test on n ≤ K paired differences cannot
# give a p-value below 2^-n: Optuna's default threshold (0.1) could not prune before the
# 4th repeat, i.e. never at the default K = 3. At 0.3 a trial that loses both of its first
# two paired comparisons against the best trial (p = 0.25) stops there.
WILCOXON_P_THRESHOLD = 0.3


def make_pruner(kind: PrunerKind) -> optuna.pruners.BasePruner:
    """``wilcoxon``: Optuna's WilcoxonPruner on the per-repeat objectives (paired with the
    best trial's by seed); ``median``: MedianPruner on the running mean; ``none``."""
    if kind == "wilcoxon":
        with warnings.catch_warnings():  # "experimental" since Optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(
                p_threshold=WILCOXON_P_THRESHOLD, n_startup_steps=2
            )
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"pruner: unknown {kind!r} (allowed: wilcoxon, median, none)")


def first_wave(kind: PrunerKind, repeats: int) -> int:
    """Repeats submitted at once before the pruner can judge; later ones go one at a time
    so that a pruned trial submits nothing more. Without a pruner all go at once."""
    return min(repeats, {"wilcoxon": 2, "median": 1, "none": repeats}[kind])


@dataclass
class _OpenTrial:
    """A trial in flight: its planned runs (one per repeat) and those finished so far."""

    trial: optuna.Trial
    plans: list[RunPlan]
    done: dict[int, RunOutcome] = field(default_factory=dict)
    submitted: int = 0
    in_flight: int = 0
    reported: int = 0


Submit = Callable[[RunPlan], Hashable]
FirstDone = Callable[[list[Hashable]], Hashable]


@dataclass
class Driver:
    """Keeps ``batch`` trials of one study in flight until it has ``n_trials`` finished.

    ``record(run_outcome)`` is called for every finished run before Optuna is told about
    its trial (so a crash in between leaves a RUNNING trial that the next run reaps and
    reruns from cache, never a told trial without its rows); ``on_outcome(outcome,
    finished, n_trials)`` after each trial is told.
    """

    study: optuna.Study
    space: MethodSpace
    pid: str
    method: str
    budget_sec: float
    llc_ref: float
    se_ref: float
    objective: ObjectiveKind = "abs"
    huber_k: float = 1.0
    repeats: int = 3
    pruner: PrunerKind = "wilcoxon"
    record: Callable[[RunOutcome], None] | None = None
    on_outcome: Callable[[Outcome, int, int], None] | None = None
    retry: StorageRetry = field(default_factory=StorageRetry)
    # A RUNNING trial belongs to this driver while its heartbeat is younger than this
    # (lambda_hat.reaping); renewed every quarter lease.
    lease_sec: float = 300.0
    owner: Owner = field(default_factory=Owner.me)
    # The campaign's cap on trials in flight over all its studies (None: only ``batch``).
    slots: TrialSlots | None = None
    ask_submit_sec: list[float] = field(default_factory=list)
    _last_reap: float = field(default=-math.inf, init=False, repr=False)
    _first_number: int = field(default=0, init=False, repr=False)

    def run(self, n_trials: int, *, batch: int, submit: Submit, first_done: FirstDone):
        seeds = study_seeds(self.study.study_name, self.repeats)
        open_trials: list[_OpenTrial] = []
        in_flight: dict[Hashable, tuple[_OpenTrial, RunPlan]] = {}
        outcomes: list[Outcome] = []
        asked: list[range] = []  # the trial numbers each of this driver's asks could make
        storage, study_id = self.study._storage, self.study._study_id
        self._first_number = self.retry("counting", storage.get_n_trials, study_id)
        # Seeded by the trials already there, as open_study does: a run alone proposes the
        # same configurations whenever it starts; see _ask for two runs at once.
        self.study.sampler = reseeded(self._first_number)
        self._seed_checked = False
        self._expected_number = self._first_number  # of this run's first proposed trial
        heartbeat = Heartbeat(
            self.study,
            self.owner,
            lambda: [entry.trial for entry in open_trials],
            self.lease_sec / 4,
        )
        heartbeat.start()

        def start(entry: _OpenTrial, plan: RunPlan) -> None:
            in_flight[submit(plan)] = (entry, plan)
            entry.in_flight += 1

        if self.slots is not None:
            self.slots.join(self.study.study_name)
        try:
            while True:
                starved = False  # room for a trial, but no slot of the cluster free
                room = self._room(n_trials) if len(open_trials) < batch else 0
                while len(open_trials) < batch and room > 0:
                    if not self._take_slot():
                        starved = True
                        break
                    room -= 1
                    asked_at = time.perf_counter()
                    entry = self._ask(seeds, asked)
                    open_trials.append(entry)
                    for plan in self._first_plans(entry):
                        start(entry, plan)
                    self.ask_submit_sec.append(time.perf_counter() - asked_at)
                if not in_flight:
                    if starved:  # the other studies hold the cluster: wait for a slot
                        self.slots.wait(1.0)
                        continue
                    break
                future = first_done(list(in_flight))
                entry, plan = in_flight.pop(future)
                entry.in_flight -= 1
                result, again = resolve(future, plan, submit)
                if again is not None:
                    in_flight[again] = (entry, replace(plan, attempt=plan.attempt + 1))
                    entry.in_flight += 1
                    continue
                run = self._judge_run(plan, result)
                if self.record is not None:
                    self.record(run)
                entry.done[self._key(plan)] = run
                if entry.in_flight:
                    continue  # the rest of its wave is still running
                outcome = self._judge(entry)
                if outcome is None:  # neither finished nor pruned: its next repeat
                    for plan in self._next_plans(entry):
                        start(entry, plan)
                    continue
                open_trials.remove(entry)
                if self.slots is not None:
                    self.slots.give(self.study.study_name)
                outcomes.append(outcome)
                if self.on_outcome is not None:
                    done = self.retry("counting", finished_trials, self.study)
                    self.on_outcome(outcome, done, n_trials)
        finally:
            heartbeat.stop.set()
            if self.slots is not None:
                self.slots.leave(self.study.study_name)
        self.retry("failing orphaned trials", fail_orphans, self.study, asked)
        return outcomes

    # What a trial's runs are and how they go out; a recipe study (lambda_hat.recipes)
    # spans problems and overrides these.
    def _key(self, plan: RunPlan) -> Hashable:
        return plan.repeat

    def _judge_run(self, plan: RunPlan, result: dict) -> RunOutcome:
        return judge_run(plan, result, self.llc_ref, self.se_ref, self.objective, self.huber_k)

    def _first_plans(self, entry: _OpenTrial) -> list[RunPlan]:
        entry.submitted = first_wave(self.pruner, self.repeats)
        return entry.plans[: entry.submitted]

    def _next_plans(self, entry: _OpenTrial) -> list[RunPlan]:
        entry.submitted += 1
        return [entry.plans[entry.submitted - 1]]

    def _take_slot(self) -> bool:
        return self.slots is None or self.slots.take(self.study.study_name)

    def _room(self, n_trials: int) -> int:
        """How many more trials may start: the requested count less the finished ones
        and those running under a live driver (this one or another run of the study).
        Stale trials are reaped first (at most every half lease)."""
        now = time.monotonic()
        if now - self._last_reap > self.lease_sec / 2:
            reaped = self.retry(
                "reaping stale trials", reap_stale_trials, self.study, self.lease_sec, self.owner
            )
            self._expected_number += reaped  # each is re-enqueued as a new trial
            self._last_reap = now
        finished = self.retry("counting", finished_trials, self.study)
        live = self.retry("counting", live_running, self.study, self.lease_sec)
        return n_trials - finished - live

    def _ask(self, seeds: list[int], asked: list[range]) -> _OpenTrial:
        """Ask and claim a trial. A cut-off ask leaves an unclaimed trial numbered after
        this driver's previous one: ``asked`` keeps those windows for ``fail_orphans``."""
        trial = self._ask_once(asked)
        if not self._seed_checked and not self.retry("reading", enqueued, self.study, trial):
            self._seed_checked = True
            if trial.number != self._expected_number:
                # Another run of this study asked since this one started: both samplers
                # were seeded by the same trial count and propose the same configurations.
                # Drop this trial (no run, never counted) and reseed by its number, which
                # no other run can have. A run alone never gets here.
                log.info("trial %d: another run shares the study; reseeding", trial.number)
                trial.set_user_attr("fail_reason", "asked beside another run: reseeded")
                self.retry("dropping a trial", self.study.tell, trial, state=TrialState.FAIL)
                self.study.sampler = reseeded(trial.number)
                trial = self._ask_once(asked)
        return self.retry("planning a trial", self._open, trial, seeds)

    def _ask_once(self, asked: list[range]) -> optuna.Trial:
        trial = self.retry("ask", self.study.ask, self.space.distributions())
        after = asked[-1].stop if asked else self._first_number
        asked.append(range(after, trial.number + 1))
        return trial

    def _judge(self, entry: _OpenTrial) -> Outcome | None:
        try:
            return self.retry("judging a trial", self._advance, entry)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another run reaped it (this driver's heartbeat lapsed, e.g. a long pause):
            # its parameters were re-enqueued there, so it is not told twice here.
            log.warning("trial %d was taken over by another run", entry.trial.number)
            reason = "taken over: reaped as stale by another run"
            runs = [entry.done[k] for k in sorted(entry.done)]
            trial = entry.trial
            return Outcome(trial.number, TrialState.FAIL, None, reason, runs, dict(trial.params))

    def _open(self, trial: optuna.Trial, seeds: list[int]) -> _OpenTrial:
        config = self.space.config(trial.params)
        config_json = config.model_dump(mode="json")
        config_id = config_id_for(self.method, config_json)
        plans = [
            RunPlan(
                run_id_for(self.pid, self.method, config, seed, self.budget_sec),
                self.method,
                config_json,
                dict(trial.params),
                config_id,
                seed,
                self.budget_sec,
                "search",
                repeat,
                trial.number,
            )
            for repeat, seed in enumerate(seeds)
        ]
        trial.set_user_attr("owner", self.owner.claim(time.time()))
        trial.set_user_attr("config_id", config_id)
        trial.set_user_attr("run_ids", [plan.run_id for plan in plans])
        return _OpenTrial(trial, plans)

    def _advance(self, entry: _OpenTrial) -> Outcome | None:
        """After a trial's runs in flight have all finished: report them to the pruner,
        then tell FAIL (a run failed), COMPLETE (all repeats done) or PRUNED, or return
        None to go on with the next repeat. Idempotent, so a storage retry is safe."""
        runs = [entry.done[k] for k in sorted(entry.done)]
        failed = [run for run in runs if run.objective is None]
        if failed:
            return self._tell(entry, runs, TrialState.FAIL, failed[0])
        trial = entry.trial
        while entry.reported in entry.done:
            k = entry.reported
            values = [entry.done[i].objective for i in range(k + 1)]
            # Wilcoxon pairs each repeat with the best trial's same-seed repeat; the
            # median pruner compares running means.
            shown = values[-1] if self.pruner == "wilcoxon" else statistics.fmean(values)
            trial.report(shown, step=k)
            entry.reported += 1
        if len(runs) == len(entry.plans):
            return self._tell(entry, runs, TrialState.COMPLETE)
        if trial.should_prune():
            return self._tell(entry, runs, TrialState.PRUNED)
        return None

    def _tell(
        self,
        entry: _OpenTrial,
        runs: list[RunOutcome],
        state: TrialState,
        failed: RunOutcome | None = None,
    ) -> Outcome:
        trial = entry.trial
        summary = summarize_runs(runs, self.llc_ref)
        for key in ("llc_hats", "llc_hat_mean", "llc_hat_sd", "bias", "objective_se"):
            trial.set_user_attr(key, summary[key])
        trial.set_user_attr("repeats_done", summary["repeats_done"])
        trial.set_user_attr("llc_hat", summary["llc_hat_mean"])
        trial.set_user_attr("abs_error", summary["abs_error_mean"])
        runtime = sum(run.result.get("runtime_sec") or 0.0 for run in runs)
        trial.set_user_attr("runtime_sec", runtime)
        value, reason = None, None
        if state == TrialState.FAIL:
            assert failed is not None
            reason = f"repeat {failed.plan.repeat}: {failed.reason}"
            trial.set_user_attr("status", failed.result.get("status", "error"))
            trial.set_user_attr("fail_reason", reason)
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        elif state == TrialState.PRUNED:
            trial.set_user_attr("status", "pruned")
            self.study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            value = summary["objective_mean"]
            trial.set_user_attr("status", "ok")
            self.study.tell(trial.number, value, skip_if_finished=True)
        return Outcome(trial.number, state, value, reason, runs, dict(trial.params))
