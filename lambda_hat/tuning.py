"""The Optuna side of tuning: studies, objectives, and the ask → submit → tell driver.

The driver knows nothing about Prefect or Dask: it is given ``submit(plan) -> future`` and
``first_done(futures) -> future``, keeps ``batch`` trials in flight, and tells Optuna each
result as soon as that trial finishes (no waiting for the slowest of a batch). Only this
process talks to the Optuna storage; trials get plain dicts and return plain dicts.

>>> import optuna
>>> from concurrent.futures import ThreadPoolExecutor, wait, FIRST_COMPLETED
>>> from lambda_hat.search_space import load_methods
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = open_study("sqlite:///:memory:", "p_demo:sgld")
>>> space = load_methods()["sgld"]
>>> def fake_trial(plan):   # stands in for a real run: llc_hat grows with log(step size)
...     import math
...     return {"status": "ok", "llc_hat": 3 + math.log10(plan.config["step_size"]) / 4}
>>> with ThreadPoolExecutor(2) as pool:
...     driver = Driver(study, space, pid="p_demo", method="sgld", budget_sec=1.0,
...                     llc_ref=2.0, se_ref=0.1)
...     first = lambda fs: next(iter(wait(fs, return_when=FIRST_COMPLETED).done))
...     outcomes = driver.run(6, batch=2, submit=lambda plan: pool.submit(fake_trial, plan),
...                           first_done=first)
>>> len(outcomes), finished_trials(study)
(6, 6)
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from lambda_hat.ids import stable_hash
from lambda_hat.runners.run_method import trial_id_for
from lambda_hat.search_space import MethodSpace

log = logging.getLogger(__name__)

ObjectiveKind = Literal["abs", "huber"]


def objective_value(
    llc_hat: float, llc_ref: float, se_ref: float, kind: ObjectiveKind, huber_k: float = 1.0
) -> float:
    """``abs``: |llc_hat − llc_ref|. ``huber``: quadratic within δ = k·se_ref of the
    reference (errors the reference cannot resolve count little), linear beyond.

    >>> objective_value(3.5, 3.0, 0.1, "abs")
    0.5
    >>> round(objective_value(3.05, 3.0, 0.1, "huber"), 4), objective_value(3.5, 3.0, 0.1, "huber")
    (0.0125, 0.45)
    """
    residual = abs(llc_hat - llc_ref)
    if kind == "abs":
        return residual
    delta = max(huber_k * se_ref, 1e-12)
    return residual**2 / (2 * delta) if residual <= delta else residual - delta / 2


def engine_kwargs(url: str) -> dict[str, Any]:
    """Small pools and pre-ping for servers; a long busy timeout for SQLite."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "pool_size": 2,
        "max_overflow": 2,
        "pool_recycle": 300,
    }
    if url.startswith("postgresql"):
        kwargs["connect_args"] = {"connect_timeout": 10}  # an unreachable host fails, not hangs
    return kwargs


class StorageError(RuntimeError):
    """The Optuna storage cannot be used. One line, password masked."""


def check_storage(url: str) -> None:
    """Connect once (bounded by the connect timeout) so that a wrong URL, host or password
    fails before any work starts, with a message that names the storage but not its secret.

    >>> check_storage("sqlite:///:memory:")
    >>> check_storage("nosuchdb://x")
    Traceback (most recent call last):
    ...
    lambda_hat.tuning.StorageError: optuna_storage nosuchdb://x: unknown database driver
    """
    import sqlalchemy

    from lambda_hat.settings import mask_url

    shown = mask_url(url)
    try:
        engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError):
        raise StorageError(f"optuna_storage {shown}: unknown database driver") from None
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
        raise StorageError(f"optuna_storage {shown}: cannot connect ({reason})") from None
    finally:
        engine.dispose()


def open_study(url: str, name: str, seed: int = 0) -> optuna.Study:
    """Create or resume the study ``name`` (``<pid>:<method>``)."""
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        direction="minimize",
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> int:
    """Trials that count toward ``n_trials``: the ones the driver told a result (they carry
    a ``status`` attr), not the ones it reaped or lost (those were re-enqueued and run
    again)."""
    states = (TrialState.COMPLETE, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False, states=states)
    return sum(1 for t in trials if "status" in t.user_attrs)


def best_value(study: optuna.Study) -> float | None:
    """The best objective so far (one query, not a load of every trial), or None."""
    try:
        return study.best_value
    except ValueError:  # no completed trial yet
        return None


def _requeue(
    study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial, reason: str
) -> None:
    """Fail ``trial`` (not counted) and enqueue its parameters with its seed: the rerun has
    the same trial_id, so it hits the trial's cache if the work itself had finished."""
    # The storage call works for live and frozen trials alike (FrozenTrial has no setter).
    study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    attrs = {"seed": trial.user_attrs.get("seed"), "attempt": trial.user_attrs.get("attempt", 1)}
    study.enqueue_trial(trial.params, user_attrs={**attrs, "attempt": attrs["attempt"] + 1})


def reap_stale_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials left by a dead driver and re-enqueue their parameters with their
    original seed (Optuna's heartbeat does not run under ask/tell, so nobody else will).
    Call only when no other driver works on this study."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        if trial.params or "seed" in trial.user_attrs:
            _requeue(study, trial, "stale: its driver died")
        else:  # created by an ask that failed half-way: nothing to rerun
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if stale:
        log.warning(
            "study %s: failed and re-enqueued %d stale trials", study.study_name, len(stale)
        )
    return len(stale)


def fail_orphans(study: optuna.Study) -> int:
    """Fail the RUNNING trials left when a driver has nothing in flight: an ask cut off by
    a lost connection after it created its trial. Nothing to rerun, so no re-enqueue."""
    orphans = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in orphans:
        study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", "orphan: ask cut off")
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    if orphans:
        log.warning("study %s: failed %d orphaned trials", study.study_name, len(orphans))
    return len(orphans)


RETRYABLE: tuple[type[Exception], ...] = (
    optuna.exceptions.StorageInternalError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
)


@dataclass(frozen=True)
class StorageRetry:
    """Call a storage operation, retrying connection errors (a restarting database) with
    backoff for at most ``within_sec``; then fail with one line instead of hanging.

    >>> StorageRetry(1.0)("a query", lambda: 42)
    42
    """

    within_sec: float = 120.0

    def __call__(self, what: str, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.within_sec
        delay = 0.5
        while True:
            try:
                return operation(*args, **kwargs)
            except RETRYABLE as error:
                reason = _first_line(error)
                if time.monotonic() + delay > deadline:
                    raise StorageError(
                        f"optuna_storage: {what} failed for {self.within_sec:g} s "
                        f"(LAMBDA_HAT_BUDGETS__STORAGE_RETRY_SEC); last error: {reason}"
                    ) from None
                log.warning(
                    "optuna_storage: %s failed (%s); retrying in %.1f s", what, reason, delay
                )
                time.sleep(delay)
                delay = min(2 * delay, 10.0)


def _first_line(error: BaseException) -> str:
    """The driver's own message (never the SQL parameters or the URL)."""
    cause = getattr(error, "orig", None) or error.__cause__ or error
    text = str(cause).strip().splitlines()
    return text[0] if text else type(cause).__name__


@dataclass(frozen=True)
class TrialPlan:
    """What a trial task needs: plain values only (no Optuna objects)."""

    number: int
    trial_id: str
    method: str
    config: dict[str, Any]
    hyperparams: dict[str, Any]
    seed: int
    budget_sec: float
    attempt: int = 1


@dataclass
class Outcome:
    plan: TrialPlan
    result: dict[str, Any]
    state: TrialState
    objective: float | None
    reason: str | None


# A trial whose task raised (its worker or job was killed, after Dask's own re-runs) is
# run again this many times in all before it counts as a failed trial.
MAX_ATTEMPTS = 3


@dataclass
class Driver:
    """Keeps ``batch`` trials of one study in flight until it has ``n_trials`` finished.

    ``record(outcome)`` is called before Optuna is told (so a crash in between leaves a
    RUNNING trial that the next run reaps and reruns from cache, never a told trial
    without its row), ``on_outcome(outcome, finished, n_trials)`` after.
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
    record: Callable[[Outcome], None] | None = None
    on_outcome: Callable[[Outcome, int, int], None] | None = None
    retry: StorageRetry = field(default_factory=StorageRetry)
    ask_submit_sec: list[float] = field(default_factory=list)
    _in_flight: dict[Hashable, tuple[optuna.Trial, TrialPlan]] = field(default_factory=dict)

    def run(
        self,
        n_trials: int,
        *,
        batch: int,
        submit: Callable[[TrialPlan], Hashable],
        first_done: Callable[[list[Hashable]], Hashable],
    ) -> list[Outcome]:
        self.retry("reaping stale trials", reap_stale_trials, self.study)
        to_start = max(n_trials - self.retry("counting", finished_trials, self.study), 0)
        outcomes: list[Outcome] = []
        while to_start > 0 or self._in_flight:
            while to_start > 0 and len(self._in_flight) < batch:
                asked = time.perf_counter()
                trial = self.retry("ask", self.study.ask, self.space.distributions())
                plan = self.retry("planning a trial", self._plan, trial)
                self._in_flight[submit(plan)] = (trial, plan)
                self.ask_submit_sec.append(time.perf_counter() - asked)
                to_start -= 1
            future = first_done(list(self._in_flight))
            trial, plan = self._in_flight.pop(future)
            result = _result_of(future)
            if result["status"] == "lost" and plan.attempt < MAX_ATTEMPTS:
                log.warning("trial %s lost (%s); running it again", plan.trial_id, result["error"])
                self.retry(
                    "re-enqueueing a lost trial", _requeue, self.study, trial, result["error"]
                )
                to_start += 1
                continue
            outcome = self._judge(plan, result)
            if self.record is not None:
                self.record(outcome)
            self.retry("telling a result", self._tell, trial, outcome)
            outcomes.append(outcome)
            if self.on_outcome is not None:
                done = self.retry("counting", finished_trials, self.study)
                self.on_outcome(outcome, done, n_trials)
        self.retry("failing orphaned trials", fail_orphans, self.study)
        return outcomes

    def _plan(self, trial: optuna.Trial) -> TrialPlan:
        seed = trial.user_attrs.get("seed")
        if seed is None:
            seed = int(stable_hash({"study": self.study.study_name, "n": trial.number}), 16) % 2**31
            trial.set_user_attr("seed", seed)
        config = self.space.config(trial.params)
        trial_id = trial_id_for(self.pid, self.method, config, seed, self.budget_sec)
        trial.set_user_attr("trial_id", trial_id)
        return TrialPlan(
            trial.number,
            trial_id,
            self.method,
            config.model_dump(mode="json"),
            dict(trial.params),
            seed,
            self.budget_sec,
            trial.user_attrs.get("attempt", 1),
        )

    def _judge(self, plan: TrialPlan, result: dict[str, Any]) -> Outcome:
        """COMPLETE with the objective, or FAIL with a reason (never an inf objective)."""
        llc = result.get("llc_hat")
        status = result.get("status", "error")
        if llc is None or not math.isfinite(llc) or status in ("diverged", "error", "lost"):
            reason = result.get("error") or f"status {status}"
            return Outcome(plan, result, TrialState.FAIL, None, reason)
        value = objective_value(llc, self.llc_ref, self.se_ref, self.objective, self.huber_k)
        return Outcome(plan, result, TrialState.COMPLETE, value, None)

    def _tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        """Idempotent, so a retry after a lost connection cannot tell twice."""
        trial.set_user_attr("status", outcome.result.get("status", "error"))
        if outcome.state == TrialState.FAIL:
            trial.set_user_attr("fail_reason", outcome.reason)
            self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            trial.set_user_attr("llc_hat", outcome.result["llc_hat"])
            self.study.tell(trial.number, outcome.objective, skip_if_finished=True)


def _result_of(future: Any) -> dict[str, Any]:
    """The trial's result dict. The runner never raises (a diverged or failing run is a
    result), so an exception here is the infrastructure's: the trial is ``lost``."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - a lost worker must not end the study
        return {"status": "lost", "llc_hat": None, "error": f"{type(error).__name__}: {error}"}
