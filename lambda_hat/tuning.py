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
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import optuna
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
    a ``status`` attr), not the ones it reaped (those were re-enqueued and run again)."""
    states = (TrialState.COMPLETE, TrialState.FAIL)
    trials = study.get_trials(deepcopy=False, states=states)
    return sum(1 for t in trials if "status" in t.user_attrs)


def reap_stale_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials left by a dead driver and re-enqueue their parameters with their
    original seed, so the rerun has the same trial_id (and hits its cache if it finished).
    Call only when no other driver works on this study."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(trial.params, user_attrs={"seed": trial.user_attrs.get("seed")})
    if stale:
        log.warning(
            "study %s: failed and re-enqueued %d stale trials", study.study_name, len(stale)
        )
    return len(stale)


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


@dataclass
class Outcome:
    plan: TrialPlan
    result: dict[str, Any]
    state: TrialState
    objective: float | None
    reason: str | None


@dataclass
class Driver:
    """Keeps ``batch`` trials of one study in flight until it has ``n_trials`` finished."""

    study: optuna.Study
    space: MethodSpace
    pid: str
    method: str
    budget_sec: float
    llc_ref: float
    se_ref: float
    objective: ObjectiveKind = "abs"
    huber_k: float = 1.0
    on_outcome: Callable[[Outcome, int, int], None] | None = None
    _in_flight: dict[Hashable, tuple[optuna.Trial, TrialPlan]] = field(default_factory=dict)

    def run(
        self,
        n_trials: int,
        *,
        batch: int,
        submit: Callable[[TrialPlan], Hashable],
        first_done: Callable[[list[Hashable]], Hashable],
    ) -> list[Outcome]:
        reap_stale_trials(self.study)
        to_start = max(n_trials - finished_trials(self.study), 0)
        outcomes: list[Outcome] = []
        while to_start > 0 or self._in_flight:
            while to_start > 0 and len(self._in_flight) < batch:
                trial = self.study.ask(self.space.distributions())
                plan = self._plan(trial)
                self._in_flight[submit(plan)] = (trial, plan)
                to_start -= 1
            future = first_done(list(self._in_flight))
            trial, plan = self._in_flight.pop(future)
            outcome = self._tell(trial, plan, _result_of(future))
            outcomes.append(outcome)
            if self.on_outcome is not None:
                self.on_outcome(outcome, finished_trials(self.study), n_trials)
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
        )

    def _tell(self, trial: optuna.Trial, plan: TrialPlan, result: dict[str, Any]) -> Outcome:
        llc = result.get("llc_hat")
        status = result.get("status", "error")
        trial.set_user_attr("status", status)
        if llc is None or not math.isfinite(llc) or status in ("diverged", "error"):
            reason = result.get("error") or f"status {status}"
            trial.set_user_attr("fail_reason", reason)
            self.study.tell(trial, state=TrialState.FAIL)
            return Outcome(plan, result, TrialState.FAIL, None, reason)
        value = objective_value(llc, self.llc_ref, self.se_ref, self.objective, self.huber_k)
        trial.set_user_attr("llc_hat", llc)
        self.study.tell(trial, value)
        return Outcome(plan, result, TrialState.COMPLETE, value, None)


def _result_of(future: Any) -> dict[str, Any]:
    """The trial's result dict; an exception from the task (after its retries) is an
    ``error`` result, so one lost trial does not end the study."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - infrastructure failures become FAIL trials
        return {"status": "error", "llc_hat": None, "error": f"{type(error).__name__}: {error}"}
