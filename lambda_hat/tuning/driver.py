"""The one Optuna driver: ask → submit → tell, for a study of one problem or of a family.

A *trial* is one configuration. It is judged on runs: ``repeats`` runs on each problem of
the study's family (a per-problem study is a family of one), repeat k of every trial on
the study's k-th common seed, so configurations are compared on the same noise (common
random numbers). What a run's objective is, what the pruner sees as one step and what
the trial is told come from the study's kind (``lambda_hat.tuning.kinds``): the mean
|error| over repeats for a per-problem study, the mean relative error over problems for a
recipe. Runs are the unit of work: each is submitted on its own (they spread over
workers) and is cached by its run id. Between steps the pruner may stop a losing trial
(told PRUNED); the runs it did are still recorded.

The driver knows nothing about Prefect or Dask: it is given ``submit(run_plan) -> future``
and ``first_done(futures) -> future``, keeps ``batch`` trials in flight, and tells Optuna a
trial as soon as its last run finishes. Only this process talks to the Optuna storage.

>>> import optuna
>>> from concurrent.futures import ThreadPoolExecutor, wait, FIRST_COMPLETED
>>> from lambda_hat.tuning.kinds import Member
>>> from lambda_hat.tuning.search_space import load_methods
>>> from lambda_hat.tuning.storage import open_study, finished_trials
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = open_study("sqlite:///:memory:", "p_demo:sgld")
>>> space = load_methods()["sgld"]
>>> def fake_run(plan):   # stands in for a real run: llc_hat grows with log(step size)
...     import math
...     return {"status": "ok", "llc_hat": 3 + math.log10(plan.config["step_size"]) / 4}
>>> with ThreadPoolExecutor(2) as pool:
...     driver = Driver(study, space, method="sgld", members=[Member("p_demo", "demo", 2.0, 0.1)],
...                     budget_sec=1.0, repeats=3, pruner="none")
...     first = lambda fs: next(iter(wait(fs, return_when=FIRST_COMPLETED).done))
...     outcomes = driver.run(4, batch=2, submit=lambda plan: pool.submit(fake_run, plan),
...                           first_done=first)
>>> len(outcomes), finished_trials(study), [len(o.runs) for o in outcomes]
(4, 4, [3, 3, 3, 3])
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace

import optuna
from optuna.trial import TrialState

from lambda_hat.tuning.kinds import Member, PerProblem, StudyKind, member_of
from lambda_hat.tuning.noise_floor import NOISE_FLOOR_Z, noise_floor_reached, reference_noise
from lambda_hat.tuning.pruning import PrunerKind, first_wave
from lambda_hat.tuning.reaping import (
    Heartbeat,
    Owner,
    enqueued,
    fail_orphans,
    live_running,
    reap_stale_trials,
)
from lambda_hat.tuning.search_samplers import make_sampler
from lambda_hat.tuning.search_space import MethodSpace
from lambda_hat.tuning.slots import TrialSlots
from lambda_hat.tuning.storage import StorageRetry, finished_trials, sampler_seed
from lambda_hat.tuning.trials import (
    Outcome,
    RunOutcome,
    RunPlan,
    plan_runs,
    resolve,
    study_seeds,
)
from lambda_hat.tuning.warm_start import WarmStart

log = logging.getLogger(__name__)


@dataclass
class _OpenTrial:
    """A trial in flight: its planned runs, grouped into pruner steps, and those finished
    so far (by plan index)."""

    trial: optuna.Trial
    plans: list[RunPlan]
    steps: list[list[int]]
    done: dict[int, RunOutcome] = field(default_factory=dict)
    submitted: int = 0  # steps submitted
    in_flight: int = 0
    reported: int = 0  # steps reported to the pruner

    def runs(self) -> list[RunOutcome]:
        """The finished runs in plan order."""
        return [self.done[index] for index in sorted(self.done)]


Submit = Callable[[RunPlan], Hashable]
FirstDone = Callable[[list[Hashable]], Hashable]


@dataclass
class Driver:
    """Keeps ``batch`` trials of one study in flight until it has ``n_trials`` finished.

    ``members`` is the study's family (one problem for a per-problem study) and ``kind``
    says how its runs are judged and its trials told (``lambda_hat.tuning.kinds``).
    ``record(run_outcome)`` is called for every finished run before Optuna is told about
    its trial (so a crash in between leaves a RUNNING trial that the next run reaps and
    reruns from cache, never a told trial without its rows); ``on_outcome(outcome,
    finished, n_trials)`` after each trial is told.
    """

    study: optuna.Study
    space: MethodSpace
    method: str
    members: list[Member]
    budget_sec: float
    kind: StudyKind = field(default_factory=PerProblem)
    repeats: int = 3
    pruner: PrunerKind = "wilcoxon"
    record: Callable[[RunOutcome], None] | None = None
    on_outcome: Callable[[Outcome, int, int], None] | None = None
    retry: StorageRetry = field(default_factory=StorageRetry)
    # A RUNNING trial belongs to this driver while its heartbeat is younger than this
    # (lambda_hat.tuning.reaping); renewed every quarter lease.
    lease_sec: float = 300.0
    owner: Owner = field(default_factory=Owner.me)
    # The campaign's cap on trials in flight over all its studies (None: only ``batch``).
    slots: TrialSlots | None = None
    # A new study's first trial (lambda_hat.tuning.warm_start); none for a resumed one.
    warm_start: WarmStart | None = None
    # What proposes the configurations (lambda_hat.tuning.search_samplers).
    sampler: str = "tpe"
    # End the study early once its best is at the noise floor (lambda_hat.tuning.noise_floor).
    stop_at_noise_floor: bool = False
    stopped_at_noise_floor: bool = field(default=False, init=False)
    ask_submit_sec: list[float] = field(default_factory=list)
    _last_reap: float = field(default=-math.inf, init=False, repr=False)
    _first_number: int = field(default=0, init=False, repr=False)

    def run(self, n_trials: int, *, batch: int, submit: Submit, first_done: FirstDone):
        seeds = study_seeds(self.study.study_name, self.repeats)
        open_trials: list[_OpenTrial] = []
        in_flight: dict[Hashable, tuple[_OpenTrial, int, RunPlan]] = {}
        outcomes: list[Outcome] = []
        asked: list[range] = []  # the trial numbers each of this driver's asks could make
        self._begin()
        heartbeat = Heartbeat(
            self.study,
            self.owner,
            lambda: [entry.trial for entry in open_trials],
            self.lease_sec / 4,
        )
        heartbeat.start()

        def start(entry: _OpenTrial, steps: int) -> None:
            """Submit the entry's next ``steps`` pruner steps."""
            for step in entry.steps[entry.submitted : entry.submitted + steps]:
                for index in step:
                    in_flight[submit(entry.plans[index])] = (entry, index, entry.plans[index])
                    entry.in_flight += 1
            entry.submitted += steps

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
                    start(entry, first_wave(self.pruner, len(entry.steps)))
                    self.ask_submit_sec.append(time.perf_counter() - asked_at)
                if not in_flight:
                    if starved:  # the other studies hold the cluster: wait for a slot
                        self.slots.wait(1.0)
                        continue
                    break
                future = first_done(list(in_flight))
                entry, index, plan = in_flight.pop(future)
                entry.in_flight -= 1
                result, again = resolve(future, plan, submit)
                if again is not None:
                    retried = replace(plan, attempt=plan.attempt + 1)
                    in_flight[again] = (entry, index, retried)
                    entry.in_flight += 1
                    continue
                run = self.kind.judge(plan, result, member_of(self.members, plan.pid))
                if self.record is not None:
                    self.record(run)
                entry.done[index] = run
                if entry.in_flight:
                    continue  # the rest of its wave is still running
                outcome = self._judge(entry)
                if outcome is None:  # neither finished nor pruned: its next step
                    start(entry, 1)
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

    def _begin(self) -> None:
        """Seed the sampler by the study and the trials already there, as open_study does:
        a run alone proposes the same configurations whenever it starts (see _ask for two
        runs at once); a new study's first trial is the warm start, if any."""
        self._first_number = self.retry(
            "counting", lambda: len(self.study.get_trials(deepcopy=False))
        )
        self._reseed(self._first_number)
        self._seed_checked = False
        self._expected_number = self._first_number  # of this run's first proposed trial
        if self.warm_start is not None and self._first_number == 0:
            self._enqueue_warm_start(self.warm_start)

    def _reseed(self, trials_so_far: int) -> None:
        seed = sampler_seed(self.study.study_name, trials_so_far)
        self.study.sampler = make_sampler(self.sampler, seed)

    def _enqueue_warm_start(self, start: WarmStart) -> None:
        self.retry(
            "enqueueing the warm start", self.study.enqueue_trial, start.params,
            user_attrs={"warm_start": start.source}, skip_if_exists=True,
        )  # fmt: skip
        self._expected_number += 1  # the sampler's first proposal comes after it
        log.info("%s: trial 0 is the recipe of %s: %s", self.study.study_name, start.source,
                 start.params)  # fmt: skip
        for difference in start.differences:
            log.warning("%s: the recipe fixed %s", self.study.study_name, difference)

    def _take_slot(self) -> bool:
        return self.slots is None or self.slots.take(self.study.study_name)

    def _room(self, n_trials: int) -> int:
        """How many more trials may start: the requested count less the finished ones
        and those running under a live driver (this one or another run of the study).
        Stale trials are reaped first (at most every half lease)."""
        now = time.monotonic()
        if now - self._last_reap > self.lease_sec / 2:
            reaped = self.retry(
                "reaping stale trials", reap_stale_trials, self.study, self.lease_sec,
                self.owner, self._first_number,
            )  # fmt: skip
            self._expected_number += reaped  # each is re-enqueued as a new trial
            self._last_reap = now
        finished = self.retry("counting", finished_trials, self.study)
        live = self.retry("counting", live_running, self.study, self.lease_sec)
        if self.stop_at_noise_floor and self._at_noise_floor():
            return 0
        return n_trials - finished - live

    def _at_noise_floor(self) -> bool:
        """Whether the best trial is within the noise of zero error (logged once)."""
        noise = reference_noise(self.kind, self.members)
        reached = self.retry("reading the best trial", noise_floor_reached, self.study, noise)
        if reached is not None and not self.stopped_at_noise_floor:
            self.stopped_at_noise_floor = True
            log.info(
                "%s: best objective %.4g is within the noise floor %.4g (%g × the combined "
                "reference and seed SE): no further trial can beat it by more; stopping",
                self.study.study_name, reached[0], reached[1], NOISE_FLOOR_Z,
            )  # fmt: skip
        return reached is not None

    def _ask(self, seeds: list[int], asked: list[range]) -> _OpenTrial:
        """Ask and claim a trial. A cut-off ask leaves an unclaimed trial numbered after
        this driver's previous one: ``asked`` keeps those windows for ``fail_orphans``."""
        trial = self._ask_once(asked)
        if not self._seed_checked and not self.retry("reading", enqueued, self.study, trial):
            self._seed_checked = True
            if trial.number != self._expected_number:
                # Another run of this study asked since this one started: both samplers
                # were seeded by the same trial count and would propose the same ones.
                # Drop this trial (no run, never counted) and reseed by its number, which
                # no other run can have. A run alone never gets here.
                log.info("trial %d: another run shares the study; reseeding", trial.number)
                trial.set_user_attr("fail_reason", "asked beside another run: reseeded")
                self.retry("dropping a trial", self.study.tell, trial, state=TrialState.FAIL)
                self._reseed(trial.number)
                trial = self._ask_once(asked)
        return self.retry("planning a trial", self._open, trial, seeds)

    def _ask_once(self, asked: list[range]) -> optuna.Trial:
        trial = self.retry("ask", self.study.ask, self.space.distributions())
        after = asked[-1].stop if asked else self._first_number
        asked.append(range(after, trial.number + 1))
        return trial

    def _open(self, trial: optuna.Trial, seeds: list[int]) -> _OpenTrial:
        plans = plan_runs(
            self.space.config(trial.params), trial.params, method=self.method,
            pids=[member.pid for member in self.members], seeds=seeds,
            budget_sec=self.budget_sec, stage="search", trial_number=trial.number,
        )  # fmt: skip
        steps: dict[int, list[int]] = {}
        for index, plan in enumerate(plans):
            steps.setdefault(self.kind.step(plan, self.members), []).append(index)
        trial.set_user_attr("owner", self.owner.claim(time.time()))
        trial.set_user_attr("config_id", plans[0].config_id)
        trial.set_user_attr("run_ids", [plan.run_id for plan in plans])
        return _OpenTrial(trial, plans, [steps[k] for k in sorted(steps)])

    def _judge(self, entry: _OpenTrial) -> Outcome | None:
        try:
            return self.retry("judging a trial", self._advance, entry)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Another run reaped it (this driver's heartbeat lapsed, e.g. a long pause):
            # its parameters were re-enqueued there, so it is not told twice here.
            log.warning("trial %d was taken over by another run", entry.trial.number)
            reason = "taken over: reaped as stale by another run"
            trial = entry.trial
            return Outcome(
                trial.number, TrialState.FAIL, None, reason, entry.runs(), dict(trial.params)
            )

    def _advance(self, entry: _OpenTrial) -> Outcome | None:
        """After a trial's runs in flight have all finished: report its complete steps to
        the pruner, then tell FAIL (a run failed), COMPLETE (every run done) or PRUNED, or
        return None to go on with the next step. Idempotent, so a storage retry is safe."""
        runs = entry.runs()
        failed = [run for run in runs if run.objective is None]
        if failed:
            return self._tell(entry, runs, TrialState.FAIL, failed[0])
        trial = entry.trial
        while entry.reported < len(entry.steps) and all(
            index in entry.done for index in entry.steps[entry.reported]
        ):
            shown = self.kind.step_value(
                [[entry.done[i].objective for i in step]
                 for step in entry.steps[: entry.reported + 1]],
                self.pruner,
            )  # fmt: skip
            trial.report(shown, step=entry.reported)
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
        summary = self.kind.summarize(runs, self.members)
        for key, value in summary["attrs"].items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("runtime_sec", sum(r.result.get("runtime_sec") or 0.0 for r in runs))
        value, reason = None, None
        if state == TrialState.FAIL:
            assert failed is not None
            reason = self.kind.failure(failed, self.members)
            trial.set_user_attr("status", failed.result.get("status", "error"))
            trial.set_user_attr("fail_reason", reason)
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        elif state == TrialState.PRUNED:
            trial.set_user_attr("status", "pruned")
            self.study.tell(trial.number, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            value = summary["value"]
            trial.set_user_attr("status", "ok")
            self.study.tell(trial.number, value, skip_if_finished=True)
        return Outcome(trial.number, state, value, reason, runs, dict(trial.params))
