"""Gaussian variational inference (BlackJAX ``meanfield_vi`` / ``fullrank_vi``).

q is initialised *at w** with standard deviation ``init_sigma`` in every direction
(BlackJAX's own init centres q at zero, far from the optimum whose neighbourhood the LLC
describes). ``num_chains`` independent fits run vmapped; after ``num_steps`` of Adam on
the ELBO (learning rate traced, through ``optax.inject_hyperparams``), each fit draws
``num_eval_samples`` from q and the LLC is nβ·(E_q[L_n] − L0). Those draws are
independent, so the SE is the sample SE; the spread between fits shows in R-hat.

>>> from lambda_hat.problems.specs import ProblemSpec
>>> from lambda_hat.problems.targets import build_problem
>>> spec = ProblemSpec.model_validate({"name": "doc", "model": {"family": "dln",
...     "widths": [2, 2]}, "teacher": {"rank": 2}, "data": {"n": 200}})
>>> result = run(build_problem(spec), VIConfig(learning_rate=0.01, num_steps=1000))
>>> result.status, abs(result.llc_hat - 2.0) < 0.6   # regular, d = 4: λ = 2
('ok', True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import lru_cache, partial
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lambda_hat.problems.posterior import Arch, empirical_loss, log_density
from lambda_hat.problems.targets import Problem
from lambda_hat.samplers.chunks import ChunkLoop, ChunkOut, Drive, divergence_reason, explode_limit
from lambda_hat.samplers.common import (
    FORWARD_COST,
    Cost,
    MethodResult,
    Shape,
    cast_full_batch,
    cast_problem,
    count_compile,
    data_spec,
    full_batch_spec,
    result_from_drive,
    scalars,
    shape_of,
)
from lambda_hat.samplers.configs import VIConfig
from lambda_hat.samplers.estimator import compiled_diagnostics

MAX_FULLRANK_DIM = 2000  # d(d+1)/2 Cholesky parameters: 2M at d = 2000


class _Static(NamedTuple):
    arch: Arch
    fullrank: bool
    num_samples: int
    num_eval_samples: int
    num_chains: int
    precision: str
    chunk_steps: int


def _algorithm(static: _Static):
    return blackjax.vi.fullrank_vi if static.fullrank else blackjax.vi.meanfield_vi


def _optimizer(learning_rate):
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def _setup(data, post, hp, static: _Static):
    """Every fit starts as N(w*, init_sigma²·I); also returns L0 in the run's precision."""
    w = post.w_star
    d = w.shape[0]
    log_sigma = jnp.log(hp["init_sigma"]) * jnp.ones_like(w)
    if static.fullrank:
        scale = jnp.concatenate([log_sigma, jnp.zeros(d * (d - 1) // 2, w.dtype)])
        state_type = blackjax.vi.fullrank_vi.FRVIState
    else:
        scale, state_type = log_sigma, blackjax.vi.meanfield_vi.MFVIState
    opt_state = _optimizer(hp["learning_rate"]).init((w, scale))
    state = state_type(w, scale, opt_state)
    states = jax.tree.map(lambda a: jnp.broadcast_to(a, (static.num_chains, *a.shape)), state)
    return states, empirical_loss(w, data, static.arch)


def _chunk(states, keys, data, post, hp, static: _Static):
    """``chunk_steps`` ELBO steps per fit; no kept draws (q is sampled at the end)."""
    logdensity = partial(log_density, data=data, post=post, arch=static.arch)
    # The learning rate lives in the optimizer state; this value is only a placeholder.
    optimizer = _optimizer(hp["learning_rate"])
    step = _algorithm(static).step

    def one_fit(state, key):
        def body(state, key):
            state, info = step(key, state, logdensity, optimizer, static.num_samples)
            return state, jnp.isfinite(info.elbo)

        state, finite = jax.lax.scan(body, state, jax.random.split(key, static.chunk_steps))
        return state, jnp.sum(~finite) / static.chunk_steps

    states, bad = jax.vmap(one_fit)(states, keys)
    empty = jnp.zeros((static.num_chains, 0), post.w_star.dtype)
    return states, ChunkOut(empty, bad.astype(empty.dtype))


def _evaluate(states, keys, data, static: _Static):
    """L_n at ``num_eval_samples`` draws from each fitted q: (fits, draws)."""
    sample = _algorithm(static).sample

    def one_fit(state, key):
        draws = sample(key, state, static.num_eval_samples)
        return jax.lax.map(lambda w: empirical_loss(w, data, static.arch), draws)

    return jax.vmap(one_fit)(states, keys)


def _hp(config: VIConfig) -> dict[str, jax.Array]:
    return scalars(
        {"learning_rate": config.learning_rate, "init_sigma": config.init_sigma},
        config.precision,
    )


@lru_cache(maxsize=32)
def _compiled(static: _Static, shape: Shape):
    """Ahead-of-time compiled setup, chunk and evaluation for one (shape, static config)."""
    count_compile()
    _, post = data_spec(shape, static.precision)
    data = full_batch_spec(shape, static.precision, static.arch)
    hp = jax.eval_shape(lambda: _hp(VIConfig(precision=static.precision)))
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), static.num_chains))
    setup = jax.jit(_setup, static_argnames="static").lower(data, post, hp, static=static)
    setup = setup.compile()
    states, _ = setup.out_info
    chunk = jax.jit(_chunk, static_argnames="static")
    chunk = chunk.lower(states, keys, data, post, hp, static=static).compile()
    evaluate = jax.jit(_evaluate, static_argnames="static")
    evaluate = evaluate.lower(states, keys, data, static=static).compile()
    return setup, chunk, evaluate


def _static(problem: Problem, config: VIConfig) -> _Static:
    return _Static(
        arch=problem.arch,
        fullrank=config.family == "fullrank",
        num_samples=config.num_samples,
        num_eval_samples=config.num_eval_samples,
        num_chains=config.num_chains,
        precision=config.precision,
        chunk_steps=config.chunk_steps,
    )


def run(
    problem: Problem,
    config: VIConfig | None = None,
    *,
    seed: int = 0,
    budget_sec: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MethodResult:
    """Fit q from w*, then estimate the LLC from draws of q."""
    config = config or VIConfig()
    if config.family == "fullrank" and problem.d > MAX_FULLRANK_DIM:
        raise ValueError(
            f"family 'fullrank' needs d <= {MAX_FULLRANK_DIM}, problem {problem.pid} has "
            f"d = {problem.d}; use 'meanfield'"
        )
    started = time.perf_counter()
    static = _static(problem, config)
    setup, chunk, evaluate = _compiled(static, shape_of(problem))
    _, post = cast_problem(problem, config.precision)
    data = cast_full_batch(problem, config.precision)  # every VI step reads all the data
    hp = _hp(config)
    states, L0 = setup(data, post, hp)
    L0 = float(L0)
    key_fit, key_eval = jax.random.split(jax.random.key(seed))
    loop = ChunkLoop(
        lambda states, keys: chunk(states, keys, data, post, hp),
        num_chains=config.num_chains,
        L0=L0,
        n_beta=problem.n_beta,
        d=problem.d,
    )
    deadline = None if budget_sec is None else started + budget_sec
    if deadline is not None:  # so that finishing never waits for a compile
        compiled_diagnostics((config.num_chains, config.num_eval_samples))
    drive = loop.run(
        states,
        key_fit,
        num_chunks=math.ceil(config.num_steps / config.chunk_steps),
        discard=0,
        keep_draws=0,
        deadline=deadline,
        progress=progress,
        max_bad_fraction=0.0,
    )
    drive = _sample_q(drive, evaluate, key_eval, data, config, L0, problem.n_beta, problem.d)
    steps = drive.chunks_done * config.chunk_steps * config.num_chains
    evals = drive.losses.size
    result = result_from_drive(
        "vi",
        drive,
        L0=L0,
        n_beta=problem.n_beta,
        cost=Cost(steps * config.num_samples, steps * config.num_samples + evals * FORWARD_COST),
        started=started,
        seed=seed,
        num_chains=config.num_chains,
        diagnostics={"family": config.family, "optimizer_steps": steps // config.num_chains},
    )
    return result


def _sample_q(drive: Drive, evaluate, key, data, config: VIConfig, L0, n_beta, d) -> Drive:
    """Draw from the fitted q (also after a budget stop: a partly fitted q is still a q)."""
    if drive.status == "diverged" or drive.chunks_done == 0:
        return drive
    keys = jax.random.split(key, config.num_chains)
    losses = np.asarray(evaluate(drive.state, keys, data))
    reason = divergence_reason(losses, np.zeros(0), L0, n_beta, explode_limit(d))
    if reason is not None:
        return drive._replace(status="diverged", reason=f"draws from q: {reason}")
    return drive._replace(losses=losses)
