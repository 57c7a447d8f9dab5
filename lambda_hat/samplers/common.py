"""What every cheap-method runner shares: the result type, the data cast to the run's
precision, hyperparameters as traced scalars, the estimate from kept draws, and a compile
counter. The budgeted chunk loop is ``lambda_hat.samplers.chunks``.

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
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict

from lambda_hat.io import atomic_write_json
from lambda_hat.problems.posterior import Arch, LossData, Moments, PosteriorParams, is_linear
from lambda_hat.problems.targets import Problem
from lambda_hat.samplers.chunks import Drive
from lambda_hat.samplers.configs import Precision, Status
from lambda_hat.samplers.estimator import llc_from_losses

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
