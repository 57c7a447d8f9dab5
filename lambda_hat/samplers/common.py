"""What every cheap-method runner shares: the result type, the budgeted chunk loop with
divergence checks, hyperparameters as traced scalars, and a compile counter.

A runner compiles two kinds of function once per (problem shape, static config): a setup
(initial state, tuning) and a fixed-length *chunk* of kept draws. Hyperparameter values
enter both as traced arguments, so the trials of a study share one compile.

Every full-data computation (VI's ELBO and its draws, MCLMC's gradient, SGLD's L_n at a
kept draw and its start) reads ``Problem.full_batch_data``: for a linear network the
data's second moments, so its cost does not grow with n. SGLD's minibatch gradients read
rows. ``Cost`` still counts a full-data gradient as 1 either way, so costs compare across
methods and problems: it measures the algorithm's work, not the arithmetic it took.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict

from lambda_hat.io import atomic_write_json
from lambda_hat.problems.posterior import Arch, LossData, Moments, PosteriorParams, is_linear
from lambda_hat.problems.targets import Problem
from lambda_hat.samplers.configs import Precision, Status
from lambda_hat.samplers.estimator import compiled_diagnostics, llc_from_losses

# Ahead-of-time compiles done by the runners in this process (see ``count_compile``).
_COMPILES = {"count": 0}


def count_compile() -> None:
    """Called by each runner's cached compile function on a cache miss."""
    _COMPILES["count"] += 1


def compile_count() -> int:
    """How many kernels the cheap-method runners have compiled in this process.

    A study whose trials differ only in hyperparameter values must not raise it after the
    first trial.
    """
    return _COMPILES["count"]


class MethodResult(BaseModel):
    """What ``metrics.json`` holds (docs/architecture.md, "Contracts")."""

    model_config = ConfigDict(frozen=True)

    method: str
    llc_hat: float | None
    se_hat: float | None
    runtime_sec: float
    grad_evals: int  # gradient evaluations of any batch size, all chains
    full_grad_equiv: float  # the same work in full-data gradients (see ``Cost``)
    n_draws: int  # kept draws over all chains
    n_chains: int
    status: Status
    error: str | None = None
    seed: int
    diagnostics: dict[str, Any] = {}

    def write(self, out_dir: Path) -> Path:
        """Write ``metrics.json`` atomically and return its path."""
        path = Path(out_dir) / "metrics.json"
        atomic_write_json(path, self.model_dump(mode="json"))
        return path


class Cost(NamedTuple):
    """Work done, counted in Python from the schedule (exact, no device round trips).

    A full-data gradient is one unit; a minibatch gradient of b points is b/n; a
    loss-only forward pass over all n points is 1/3 (forward ≈ a third of forward+backward).
    """

    grad_evals: int = 0
    full_grad_equiv: float = 0.0


FORWARD_COST = 1.0 / 3.0


def dtype_of(precision: Precision) -> Any:
    return jnp.float32 if precision == "float32" else jnp.float64


def cast_problem(problem: Problem, precision: Precision) -> tuple[LossData, PosteriorParams]:
    """Data and posterior constants in the runner's precision."""
    dtype = dtype_of(precision)
    data = LossData(*(jnp.asarray(a, dtype) for a in problem.data))
    post = PosteriorParams(*(jnp.asarray(a, dtype) for a in problem.posterior_params()))
    return data, post


def cast_full_batch(problem: Problem, precision: Precision) -> LossData | Moments:
    """What a full-data computation reads, in the runner's precision: a linear network's
    second moments (summed over n in float64 first, then cast), else the rows."""
    data = problem.full_batch_data
    return type(data)(*(jnp.asarray(a, dtype_of(precision)) for a in data))


def scalars(values: dict[str, float], precision: Precision) -> dict[str, jax.Array]:
    """Hyperparameters as 0-d arrays: traced by the compiled kernels, never baked in."""
    dtype = dtype_of(precision)
    return {name: jnp.asarray(value, dtype) for name, value in values.items()}


class Shape(NamedTuple):
    """A problem's array sizes: with the static config, the key of a compiled kernel."""

    n: int
    n_in: int
    n_out: int
    d: int


def shape_of(problem: Problem) -> Shape:
    n, n_in = problem.data.x.shape
    return Shape(n, n_in, problem.data.y.shape[1], problem.d)


def data_spec(shape: Shape, precision: Precision) -> tuple[LossData, PosteriorParams]:
    """Abstract shapes of the traced problem arguments, for ahead-of-time compiles."""
    dtype = dtype_of(precision)
    n, n_in, n_out, d = shape
    data = LossData(
        jax.ShapeDtypeStruct((n, n_in), dtype),
        jax.ShapeDtypeStruct((n, n_out), dtype),
        jax.ShapeDtypeStruct((), dtype),
    )
    post = PosteriorParams(
        jax.ShapeDtypeStruct((d,), dtype),
        jax.ShapeDtypeStruct((), dtype),
        jax.ShapeDtypeStruct((), dtype),
    )
    return data, post


def full_batch_spec(shape: Shape, precision: Precision, arch: Arch) -> LossData | Moments:
    """Abstract shapes of what ``cast_full_batch`` returns for a problem of this shape."""
    if not is_linear(arch):
        return data_spec(shape, precision)[0]
    dtype = dtype_of(precision)
    _, n_in, n_out, _ = shape
    return Moments(
        jax.ShapeDtypeStruct((n_in, n_in), dtype),
        jax.ShapeDtypeStruct((n_in, n_out), dtype),
        jax.ShapeDtypeStruct((), dtype),
        jax.ShapeDtypeStruct((), dtype),
    )


def explode_limit(d: int) -> float:
    """A kept draw with nβ·(L_n − L0) above this is an exploding run, not a sample.

    The LLC of a d-parameter model is at most d/2 and its posterior fluctuations are of
    order √d, so 100·max(d, 10) is far outside anything a working sampler produces.
    """
    return 100.0 * max(d, 10)


class ChunkOut(NamedTuple):
    """What a compiled chunk returns besides its new state."""

    losses: jax.Array  # (chains, draws) L_n at kept draws (draws may be 0)
    bad_fraction: jax.Array  # (chains,) fraction of steps the sampler rejected as invalid
    minibatch_losses: jax.Array | None = None  # (chains, draws), SGLD's cheap estimate


class Drive(NamedTuple):
    losses: np.ndarray  # (chains, kept draws)
    chunks_done: int
    status: Status
    reason: str | None
    state: Any
    minibatch_losses: np.ndarray | None = None
    # What the loop measured of its own time: its slowest chunk, the smallest margin
    # (deadline − start − slowest so far) with which it started a chunk (never below
    # FINISH_SEC), and when the loop ended (finishing is timed from there). Tests check the
    # budget with these, not with a wall-clock constant that a loaded machine breaks.
    timing: dict[str, float] | None = None


def divergence_reason(
    losses: np.ndarray,
    bad: np.ndarray,
    L0: float,
    n_beta: float,
    limit: float,
    max_bad: float = 0.5,
) -> str | None:
    """Why a run counts as diverged, or None: non-finite losses, an exploding loss, or a
    sampler that rejected more than ``max_bad`` of its steps as non-finite."""
    if not np.all(np.isfinite(losses)):
        chains = np.flatnonzero(~np.all(np.isfinite(losses), axis=1)).tolist()
        return f"non-finite loss in chains {chains}"
    if losses.size and np.max(n_beta * (losses - L0)) > limit:
        worst = float(np.max(n_beta * (losses - L0)))
        return f"exploding loss: nβ·(L_n − L0) = {worst:.3g} > {limit:.3g}"
    if bad.size and np.max(bad) > max_bad:
        return f"{float(np.max(bad)):.0%} of steps rejected as non-finite in one chain"
    return None


# Time kept back for finishing a budgeted run: the ESS/R-hat graph is compiled for the
# trace shape the run stopped at (0.25–0.4 s measured on 2 cores), which no earlier chunk
# could know. Without it 3 s trials ended at 3.35–3.5 s.
FINISH_SEC = 0.5


class Driven(NamedTuple):
    """What ``drive_chunks`` returns: the chunks' outputs (all of them, in order), how many
    ran, why it stopped, the last state, and the loop's own timing."""

    outputs: list[Any]
    chunks_done: int
    status: Status
    reason: str | None
    state: Any
    timing: dict[str, float]


def drive_chunks(
    chunk: Callable[[Any, jax.Array], tuple[Any, Any]],
    state: Any,
    key: jax.Array,
    *,
    num_chains: int,
    num_chunks: int,
    deadline: float | None,
    first_chunk_sec: float = 0.0,
    while_running: Callable[[int, Any], None] | None = None,
    check: Callable[[int, Any], str | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    enough: Callable[[list[Any]], bool] | None = None,
) -> Driven:
    """The one budgeted chunk loop of every sampler, the HMC reference's included.

    ``chunk(state, keys) -> (state, output)`` is one compiled call (``keys``: one per
    chain). A chunk starts only if the slowest chunk so far (``first_chunk_sec`` before
    any was timed) would still end ``FINISH_SEC`` before ``deadline``; otherwise the run
    stops as ``budget_exhausted``. ``while_running(index, output)`` is called while a
    chunk computes (its output's shapes are known: compile what stopping after it would
    need); ``check(index, output)``
    returns a reason to stop the run as ``diverged``, or None; ``enough(outputs)`` True
    ends it early as ``ok`` (a precision target met).
    """
    outputs: list[Any] = []
    slowest = first_chunk_sec
    timing: dict[str, float] = {"slowest_chunk_sec": 0.0}

    def stop(done: int, status: Status, reason: str | None) -> Driven:
        return Driven(outputs, done, status, reason, state, {**timing, "loop_ended_at":
                      time.perf_counter()})  # fmt: skip

    for index in range(num_chunks):
        started = time.perf_counter()  # one reading for the check and the record
        if deadline is not None and started + slowest + FINISH_SEC > deadline:
            return stop(index, "budget_exhausted", None)
        if deadline is not None:  # what the run's own clock said when it chose to go on
            margin = deadline - started - slowest
            timing["decision_margin_sec"] = min(timing.get("decision_margin_sec", margin), margin)
        key, sub = jax.random.split(key)
        state, output = chunk(state, jax.random.split(sub, num_chains))  # dispatched
        if while_running is not None:
            while_running(index, output)
        state, output = jax.block_until_ready((state, output))
        slowest = max(slowest, time.perf_counter() - started)
        timing["slowest_chunk_sec"] = slowest
        outputs.append(output)
        reason = None if check is None else check(index, output)
        if reason is not None:
            return stop(index + 1, "diverged", f"chunk {index}: {reason}")
        if progress is not None:
            progress(index + 1, num_chunks)
        if enough is not None and enough(outputs):
            return stop(index + 1, "ok", None)
    return stop(num_chunks, "ok", None)


class ChunkLoop:
    """The cheap methods' use of ``drive_chunks``: chunks return a ``ChunkOut``, the
    first ``discard`` chunks are burn-in (checked, not kept), and a chunk whose losses
    are non-finite or exploding, or whose sampler rejected too many steps, ends the run
    as diverged."""

    def __init__(self, chunk: Callable, *, num_chains: int, L0: float, n_beta: float, d: int):
        self.chunk, self.num_chains = chunk, num_chains
        self.L0, self.n_beta, self.limit = L0, n_beta, explode_limit(d)

    def run(
        self,
        state: Any,
        key: jax.Array,
        *,
        num_chunks: int,
        discard: int,
        keep_draws: int,
        deadline: float | None,
        progress: Callable[[int, int], None] | None = None,
        max_bad_fraction: float = 0.5,
    ) -> Drive:
        def while_running(index: int, out: ChunkOut) -> None:
            if index == discard and deadline is not None and keep_draws >= 4:
                # The run may stop after any kept chunk: compile the diagnostics for the
                # first possible trace shape now, so stopping never waits for a compile.
                compiled_diagnostics((self.num_chains, min(out.losses.shape[1], keep_draws)))

        def check(index: int, out: ChunkOut) -> str | None:
            losses, bad = np.asarray(out.losses), np.asarray(out.bad_fraction)
            return divergence_reason(losses, bad, self.L0, self.n_beta, self.limit,
                                     max_bad_fraction)  # fmt: skip

        driven = drive_chunks(
            self.chunk, state, key, num_chains=self.num_chains, num_chunks=num_chunks,
            deadline=deadline, while_running=while_running, check=check, progress=progress,
        )  # fmt: skip
        kept = [] if driven.status == "diverged" else driven.outputs[discard:]
        keep = 0 if driven.status == "diverged" else keep_draws
        losses = self._join([np.asarray(out.losses) for out in kept], keep)
        minibatch = [np.asarray(o.minibatch_losses) for o in kept if o.minibatch_losses is not None]
        return Drive(
            losses, driven.chunks_done, driven.status, driven.reason, driven.state,
            self._join(minibatch, keep) if minibatch else None, driven.timing,
        )  # fmt: skip

    def _join(self, parts: list[np.ndarray], keep_draws: int) -> np.ndarray:
        if not parts:
            return np.zeros((self.num_chains, 0))
        return np.concatenate(parts, axis=1)[:, :keep_draws]


def estimate(losses: np.ndarray, L0: float, n_beta: float) -> dict[str, float | None]:
    """LLC ± SE with ESS and R-hat, or Nones when there are no kept draws."""
    if losses.size == 0:
        return {"llc": None, "se": None, "ess": None, "rhat": None}
    result = llc_from_losses(losses, L0, n_beta)
    return {
        "llc": result.llc,
        "se": None if math.isnan(result.se) else result.se,
        "ess": None if math.isnan(result.ess) else result.ess,
        "rhat": None if math.isnan(result.rhat) else result.rhat,
    }


# Points kept per chain of a run's trace of nβ(L_n − L0), for the report's trace plot.
TRACE_POINTS = 100


def thinned_trace(losses: np.ndarray, L0: float, n_beta: float) -> dict[str, Any]:
    """Each chain's nβ(L_n(w_t) − L0) at every k-th kept draw (at most ``TRACE_POINTS``),
    non-finite values as None (JSON has no NaN).

    >>> thinned_trace(np.array([[1.0, 1.5, 2.0]]), L0=1.0, n_beta=2.0)
    {'trace_every': 1, 'trace': [[0.0, 1.0, 2.0]]}
    """
    every = max(1, math.ceil(losses.shape[1] / TRACE_POINTS))
    values = n_beta * (np.asarray(losses[:, ::every], dtype=float) - L0)
    trace = [[round(float(v), 6) if math.isfinite(v) else None for v in chain] for chain in values]
    return {"trace_every": every, "trace": trace}


def result_from_drive(
    method: str,
    drive: Drive,
    *,
    L0: float,
    n_beta: float,
    cost: Cost,
    started: float,
    seed: int,
    num_chains: int,
    diagnostics: dict[str, Any],
) -> MethodResult:
    """Turn a finished chunk loop into a ``MethodResult``. A diverged run has no estimate
    (never an inf objective); a budget-exhausted one keeps the draws it has."""
    stats = estimate(drive.losses, L0, n_beta) if drive.status != "diverged" else {}
    trace = thinned_trace(drive.losses, L0, n_beta) if drive.losses.size else {}
    n_draws = int(drive.losses.size) if drive.status != "diverged" else 0
    error = drive.reason
    if drive.status == "budget_exhausted" and n_draws == 0:
        error = "budget ended before the first kept draw"
    timing = dict(drive.timing or {})
    ended = timing.pop("loop_ended_at", None)
    if ended is not None:  # the time spent after the loop: estimate, ESS, R-hat
        timing["finish_sec"] = time.perf_counter() - ended
    return MethodResult(
        method=method,
        llc_hat=stats.get("llc"),
        se_hat=stats.get("se"),
        runtime_sec=time.perf_counter() - started,
        grad_evals=cost.grad_evals,
        full_grad_equiv=cost.full_grad_equiv,
        n_draws=n_draws,
        n_chains=num_chains,
        status=drive.status,
        error=error,
        seed=seed,
        diagnostics={
            "ess": stats.get("ess"),
            "rhat": stats.get("rhat"),
            **diagnostics,
            **{key: round(value, 4) for key, value in timing.items()},
            **trace,
        },
    )
