"""What a trial is made of: run plans on common seeds, each run's judged outcome, and the
trial's summary (mean objective, its SE, the bias and spread of llc_hat).

A *trial* is one configuration, judged on ``repeats`` *runs*; repeat k of every trial of a
study uses the study's k-th common seed, so configurations are compared on the same noise.
Search seeds are even and validation seeds odd: the two sets never meet.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, Literal

from optuna.trial import TrialState
from pydantic import BaseModel

from lambda_hat.ids import stable_hash, validate_id
from lambda_hat.io import disk_full
from lambda_hat.samplers.configs import run_id_for

log = logging.getLogger(__name__)

ObjectiveKind = Literal["abs", "huber"]
Stage = Literal["search", "validation", "transfer"]


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


def study_seeds(study_name: str, count: int, stage: Stage = "search") -> list[int]:
    """The study's common seeds: repeat k of every trial uses the k-th search seed;
    validation and transfer each use their own sequence. Search seeds are even, validation
    and transfer seeds odd, so no later run ever reuses a search run's noise.

    >>> search, fresh = study_seeds("p_x:sgld", 3), study_seeds("p_x:sgld", 8, "validation")
    >>> search == study_seeds("p_x:sgld", 5)[:3], set(search) & set(fresh)
    (True, set())
    """
    parity = 0 if stage == "search" else 1
    return [
        2 * (int(stable_hash({"study": study_name, stage: k}), 16) % 2**30) + parity
        for k in range(count)
    ]


def config_id_for(method: str, config: dict[str, Any]) -> str:
    """``c_`` + hash of the method and its full config (no seed, no budget): the same
    configuration has the same id in every trial, stage and study of that method."""
    return validate_id("c_" + stable_hash({"method": method, "config": config}))


@dataclass(frozen=True)
class RunPlan:
    """What a run task needs: plain values only (no Optuna objects)."""

    run_id: str
    method: str
    config: dict[str, Any]
    hyperparams: dict[str, Any]
    config_id: str
    seed: int
    budget_sec: float
    stage: Stage = "search"
    repeat: int | None = None
    trial_number: int | None = None
    attempt: int = 1
    pid: str | None = None  # the run's problem


def plan_runs(
    config: BaseModel,
    hyperparams: dict[str, Any],
    *,
    method: str,
    pids: list[str],
    seeds: list[int],
    budget_sec: float,
    stage: Stage,
    trial_number: int | None = None,
) -> list[RunPlan]:
    """The runs of one configuration: one per (problem, seed), problem by problem; repeat
    k uses ``seeds[k]`` (noted as the repeat for search runs only). The one plan builder
    of search, validation and transfer, for a study of one problem or of many.

    >>> from lambda_hat.samplers.configs import parse_method_config
    >>> config = parse_method_config("sgld", {"step_size": 1e-4})
    >>> plans = plan_runs(config, {"step_size": 1e-4}, method="sgld", pids=["p_a", "p_b"],
    ...                   seeds=[2, 4], budget_sec=10.0, stage="search", trial_number=0)
    >>> [(plan.pid, plan.repeat, plan.seed) for plan in plans]
    [('p_a', 0, 2), ('p_a', 1, 4), ('p_b', 0, 2), ('p_b', 1, 4)]
    """
    config_json = config.model_dump(mode="json")
    config_id = config_id_for(method, config_json)
    return [
        RunPlan(
            run_id_for(pid, method, config, seed, budget_sec),
            method,
            config_json,
            dict(hyperparams),
            config_id,
            seed,
            budget_sec,
            stage,
            repeat if stage == "search" else None,
            trial_number,
            pid=pid,
        )
        for pid in pids
        for repeat, seed in enumerate(seeds)
    ]


@dataclass
class RunOutcome:
    """One finished run: its result and its own objective (None when it failed)."""

    plan: RunPlan
    result: dict[str, Any]
    objective: float | None
    abs_error: float | None
    reason: str | None


@dataclass
class Outcome:
    """One told trial."""

    number: int
    state: TrialState
    objective: float | None
    reason: str | None
    runs: list[RunOutcome]
    hyperparams: dict[str, Any]


def judge_run(
    plan: RunPlan,
    result: dict[str, Any],
    llc_ref: float,
    se_ref: float,
    kind: ObjectiveKind = "abs",
    huber_k: float = 1.0,
) -> RunOutcome:
    """The run's objective, or a reason (never an inf objective)."""
    llc = result.get("llc_hat")
    status = result.get("status", "error")
    if llc is None or not math.isfinite(llc) or status in ("diverged", "error", "lost"):
        reason = result.get("error") or f"status {status}"
        return RunOutcome(plan, result, None, None, reason)
    value = objective_value(llc, llc_ref, se_ref, kind, huber_k)
    return RunOutcome(plan, result, value, abs(llc - llc_ref), None)


def summarize_runs(runs: list[RunOutcome], llc_ref: float) -> dict[str, Any]:
    """A trial's numbers from its runs: each llc_hat, their mean, sd and bias, and the
    mean objective with its standard error (sd / √K; null for one run).

    >>> plan = RunPlan("r_a", "sgld", {}, {}, "c_a", 0, 1.0)
    >>> runs = [judge_run(plan, {"status": "ok", "llc_hat": v}, 3.0, 0.1) for v in (2.8, 3.4)]
    >>> s = summarize_runs(runs, 3.0)
    >>> [round(s[key], 3) for key in ("llc_hat_mean", "bias", "objective_mean")]
    [3.1, 0.1, 0.3]
    """
    ok = [run for run in runs if run.objective is not None]
    llc = [run.result["llc_hat"] for run in ok]
    objectives = [run.objective for run in ok]
    mean = statistics.fmean(llc) if llc else None
    return {
        "llc_hats": llc,
        "llc_hat_mean": mean,
        "llc_hat_sd": statistics.stdev(llc) if len(llc) > 1 else None,
        "bias": None if mean is None else mean - llc_ref,
        "objective_mean": statistics.fmean(objectives) if objectives else None,
        "objective_se": (
            statistics.stdev(objectives) / math.sqrt(len(objectives))
            if len(objectives) > 1
            else None
        ),
        "abs_error_mean": statistics.fmean(run.abs_error for run in ok) if ok else None,
        "repeats_done": len(runs),
    }


# A run whose task raised (its worker or job was killed, after Dask's own re-runs) is
# submitted again this many times in all before it counts as a failed run.
MAX_ATTEMPTS = 3


def resolve(
    future: Hashable, plan: RunPlan, submit: Callable[[RunPlan], Hashable]
) -> tuple[dict[str, Any], Any]:
    """The run's result, or (for a lost run with attempts left) ``({}, new_future)``."""
    result = _result_of(future)
    if result["status"] == "lost" and plan.attempt < MAX_ATTEMPTS:
        log.warning("run %s lost (%s); running it again", plan.run_id, result["error"])
        return {}, submit(replace(plan, attempt=plan.attempt + 1))
    return result, None


def group_results(future: Hashable, size: int) -> list[dict[str, Any]]:
    """The results of a group's future (one submission that ran ``size`` runs in order):
    one per run, or ``size`` times the same ``lost`` result when the task raised."""
    results = _result_of(future)
    if isinstance(results, dict):  # the infrastructure's failure: every run of it is lost
        return [results] * size
    if len(results) != size:
        lost = {"status": "lost", "llc_hat": None, "error": f"{len(results)} results for {size}"}
        return [lost] * size
    return list(results)


def _result_of(future: Any) -> Any:
    """The run's result dict (a list of them for a group). The runner never raises (a
    diverged or failing run is a result), so an exception here is the infrastructure's:
    the run is ``lost``."""
    try:
        return future.result()
    except OSError as error:
        # A full disk is not a lost worker: running the run again would fail alike.
        full = disk_full(error, "the run's outputs")
        if full is not None:
            raise full from None
        return {"status": "lost", "llc_hat": None, "error": f"{type(error).__name__}: {error}"}
    except Exception as error:  # noqa: BLE001 - a lost worker must not end the study
        return {"status": "lost", "llc_hat": None, "error": f"{type(error).__name__}: {error}"}
