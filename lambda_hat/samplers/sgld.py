"""SGLD (and RMSProp-preconditioned pSGLD) on the localized tempered posterior.

One step, with a minibatch B of the data and ε_t = η0·(1 + t/t0)^(−p):

    g  = −nβ·∇L_B(w) − γ·(w − w*)                         (unbiased for ∇log π)
    w ← w + (ε_t/2)·G·g + √(ε_t·G)·ξ,   ξ ~ N(0, I)

with G = 1 (plain SGLD, the same update as BlackJAX's ``sgld`` and devinterp's SGLD) or
G = 1/(δ + √V), V ← αV + (1−α)g² (pSGLD, Li et al. 2016, without the Γ correction; V
starts at the expected g² at w*, see ``_init``). The
step is written here rather than taken from ``blackjax.sgld`` because we need the
minibatch loss from the same forward pass (the free minibatch LLC estimate) and the
preconditioner, which BlackJAX 1.7 lacks; ``tests/test_methods.py`` checks the plain
step against BlackJAX's.

Minibatches are drawn with replacement. The LLC comes from the full-data L_n at each kept
draw (``llc_estimator="full_batch"``), or from the minibatch losses of the steps in
between (``"minibatch"``, devinterp's default, cheaper and noisier); both are reported.

>>> from lambda_hat.problems.specs import ProblemSpec
>>> from lambda_hat.problems.targets import build_problem
>>> spec = ProblemSpec.model_validate({"name": "doc", "model": {"family": "dln",
...     "widths": [2, 2]}, "teacher": {"rank": 2}, "data": {"n": 200}})
>>> result = run(build_problem(spec), SGLDConfig(step_size=1e-3, num_steps=2000,
...     batch_size=50, thinning=5))
>>> result.status, abs(result.llc_hat - 2.0) < 0.6   # regular, d = 4: λ = 2
('ok', True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lambda_hat.problems.gradient_noise import (
    batch_for_heat,
    heat_is_predictable,
    minibatch_heat,
)
from lambda_hat.problems.posterior import Arch, LossData, PosteriorParams, empirical_loss
from lambda_hat.problems.targets import Problem
from lambda_hat.samplers.chunks import ChunkLoop, ChunkOut
from lambda_hat.samplers.common import (
    FORWARD_COST,
    Cost,
    MethodResult,
    Shape,
    cast_full_batch,
    cast_problem,
    count_compile,
    data_spec,
    estimate,
    full_batch_spec,
    result_from_drive,
    scalars,
    shape_of,
)
from lambda_hat.samplers.configs import PSGLDConfig, SGLDConfig


class _Static(NamedTuple):
    arch: Arch
    num_chains: int
    batch_size: int
    rmsprop: bool
    full_batch: bool
    precision: str
    chunk_draws: int


class _Chain(NamedTuple):
    w: jax.Array
    v: jax.Array  # RMSProp second moment (unused without the preconditioner)
    t: jax.Array  # step counter, for the decay


def _step(chain: _Chain, key, data: LossData, post: PosteriorParams, hp, static: _Static):
    key_batch, key_noise = jax.random.split(key)
    index = jax.random.randint(key_batch, (static.batch_size,), 0, data.x.shape[0])
    batch = LossData(data.x[index], data.y[index], data.sigma)
    loss, grad = jax.value_and_grad(empirical_loss)(chain.w, batch, static.arch)
    g = -post.n_beta * grad - post.gamma * (chain.w - post.w_star)
    eps = hp["step_size"] * (1.0 + chain.t / hp["decay_t0"]) ** (-hp["decay_exponent"])
    v = chain.v
    if static.rmsprop:
        v = hp["rmsprop_alpha"] * v + (1.0 - hp["rmsprop_alpha"]) * g**2
        precond = 1.0 / (hp["rmsprop_delta"] + jnp.sqrt(v))
    else:
        precond = jnp.ones_like(chain.w)
    noise = jax.random.normal(key_noise, chain.w.shape, chain.w.dtype)
    w = chain.w + 0.5 * eps * precond * g + jnp.sqrt(eps * precond) * noise
    return _Chain(w, v, chain.t + 1), loss


def _kept_draw(chain: _Chain, key, data, full, post, hp, static: _Static):
    """``thinning`` steps (a traced count) on minibatches of the rows ``data``, then the
    loss at the draw (from ``full``: the second moments on a linear network)."""

    def body(i, carry):
        chain, loss_sum = carry
        chain, loss = _step(chain, jax.random.fold_in(key, i), data, post, hp, static)
        return chain, loss_sum + loss

    zero = jnp.zeros((), chain.w.dtype)
    chain, loss_sum = jax.lax.fori_loop(0, hp["thinning"], body, (chain, zero))
    minibatch_loss = loss_sum / hp["thinning"]
    loss = empirical_loss(chain.w, full, static.arch) if static.full_batch else minibatch_loss
    return chain, (loss, minibatch_loss)


def _chunk(chains: _Chain, keys, data, full, post, hp, static: _Static):
    def one_chain(chain, key):
        draw = partial(_kept_draw, data=data, full=full, post=post, hp=hp, static=static)
        return jax.lax.scan(draw, chain, jax.random.split(key, static.chunk_draws))

    chains, (losses, minibatch) = jax.vmap(one_chain)(chains, keys)
    bad = jnp.zeros(losses.shape[0], losses.dtype)  # SGLD has no rejection: NaNs show in L_n
    return chains, ChunkOut(losses, bad, minibatch)


def _init(full, post, hp, noise_variance, static: _Static):
    """Every chain at w*, and L0 in this precision. V starts at E[g²] of the first step's
    minibatch gradient at w*: (nβ)²·(∇L_n² + diag(C)/b). Its first term alone is ≈ 0 on
    a net that fits its rows, and G = 1/(δ + √V) then flings the chains out along the
    directions of small gradient before V catches up: 7× too hot on 9 610 parameters
    (docs/benchmarks.md, where a still more cautious start is measured too)."""
    loss0, grad0 = jax.value_and_grad(empirical_loss)(post.w_star, full, static.arch)
    v0 = post.n_beta**2 * (grad0**2 + noise_variance / static.batch_size)
    chain = _Chain(post.w_star, v0, jnp.zeros((), post.w_star.dtype))
    chains = jax.tree.map(lambda a: jnp.broadcast_to(a, (static.num_chains, *a.shape)), chain)
    return chains, loss0


HP_NAMES = ("step_size", "decay_exponent", "decay_t0", "rmsprop_alpha", "rmsprop_delta")


def initial_step(config: SGLDConfig, n_beta: float = 1.0, curvature: float = 1.0) -> float:
    """η0 in absolute units."""
    if config.step_size_scale == "per_nbeta":
        # The drift is (η/2)·nβ·∇L: with η = step_size/(nβ) the step in w no longer grows
        # with n, so a step size tuned on small problems holds on larger ones.
        return config.step_size / n_beta
    if config.step_size_scale == "per_curvature":
        # The stiffest direction of the posterior has curvature nβ·h (h: the largest
        # Hessian eigenvalue of L_n at w*); a Langevin step is stable below about 2/(nβ·h)
        # there, whatever the width, depth or data scale that made h.
        return config.step_size / (n_beta * curvature)
    return config.step_size


def _hp(config: SGLDConfig, n_beta: float = 1.0, curvature: float = 1.0) -> dict[str, jax.Array]:
    values = {name: getattr(config, name) for name in HP_NAMES}
    values["step_size"] = initial_step(config, n_beta, curvature)
    values = scalars(values, config.precision)
    values["thinning"] = jnp.asarray(config.thinning, jnp.int32)
    return values


def _curvature(problem, config: SGLDConfig) -> float:
    """h for per-curvature step sizes: refused where L_n has no positive curvature at w*."""
    h = problem.hessian_max_eig
    if config.step_size_scale == "per_curvature" and not h > 0:
        raise ValueError(
            f"step_size_scale per_curvature: the largest Hessian eigenvalue of L_n at w* is "
            f"{h:.3g} for {problem.spec.name}; use per_nbeta or absolute"
        )
    return h


def _heat(problem: Problem, config: SGLDConfig, batch_size: int) -> dict[str, float]:
    """SGLD's predicted minibatch heat at η0 (decay only lowers it); pSGLD's noise differs."""
    if isinstance(config, PSGLDConfig):
        return {}
    if not heat_is_predictable(problem.d, problem.n_beta, problem.L0):
        return {"minibatch_heat": None}  # not predictable from w* (gradient_noise.py)
    eta = initial_step(config, problem.n_beta, _curvature(problem, config))
    heat = minibatch_heat(eta, problem.n_beta, problem.gradient_noise_trace, batch_size)
    return {"minibatch_heat": heat}


@lru_cache(maxsize=32)
def _compiled(static: _Static, shape: Shape):
    """Ahead-of-time compiled init and chunk for one (problem shape, static config)."""
    count_compile()
    data, post = data_spec(shape, static.precision)
    full = full_batch_spec(shape, static.precision, static.arch)
    hp = jax.eval_shape(lambda: _hp(SGLDConfig(precision=static.precision)))
    variance = jax.ShapeDtypeStruct(post.w_star.shape, post.w_star.dtype)
    init = jax.jit(_init, static_argnames="static")
    init = init.lower(full, post, hp, variance, static=static).compile()
    chains, _ = init.out_info
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), static.num_chains))
    chunk = jax.jit(_chunk, static_argnames="static")
    chunk = chunk.lower(chains, keys, data, full, post, hp, static=static).compile()
    return init, chunk


def _noise_variance(problem: Problem, static: _Static, dtype) -> jax.Array:
    """diag(C) at w* where pSGLD's V needs it; plain SGLD's V is unused (zeros: no cost)."""
    if not static.rmsprop:
        return jnp.zeros(problem.d, dtype)
    return jnp.asarray(problem.gradient_noise_variance, dtype)


def batch_size_for(problem: Problem, config: SGLDConfig) -> int:
    """The batch a run uses: ``batch_size`` (at most n), or with ``minibatch_heat`` the
    smallest whose predicted LLC excess η0·(nβ)²·tr(C)/(8b) is at most that, so the
    minibatch noise's bias stays put as nβ grows (``problems/gradient_noise.py``)."""
    if config.minibatch_heat is None:
        return min(config.batch_size, problem.n)
    if not heat_is_predictable(problem.d, problem.n_beta, problem.L0):
        raise ValueError(
            f"minibatch_heat: the gradient noise at w* does not describe {problem.spec.name}'s "
            f"posterior (its excess loss, up to d/(2nβ) = {problem.d / (2 * problem.n_beta):.3g},"
            f" is not small against L0 = {problem.L0:.3g}); set batch_size instead"
        )
    eta = initial_step(config, problem.n_beta, _curvature(problem, config))
    return batch_for_heat(eta, problem.n_beta, problem.gradient_noise_trace,
                          config.minibatch_heat, problem.n)  # fmt: skip


def _static(problem: Problem, config: SGLDConfig) -> _Static:
    return _Static(
        arch=problem.arch,
        num_chains=config.num_chains,
        batch_size=batch_size_for(problem, config),
        rmsprop=config.preconditioner == "rmsprop",
        full_batch=config.llc_estimator == "full_batch",
        precision=config.precision,
        chunk_draws=config.chunk_draws,
    )


class _Schedule(NamedTuple):
    burn_chunks: int
    keep_draws: int
    sample_chunks: int
    steps_per_chunk: int


def _schedule(config: SGLDConfig) -> _Schedule:
    """Burn-in is rounded to whole chunks; the last sampling chunk may run past
    ``num_steps`` by less than one chunk (its extra draws are dropped)."""
    steps_per_chunk = config.chunk_draws * config.thinning
    burn_steps = round(config.burn_in_frac * config.num_steps)
    burn_chunks = round(burn_steps / steps_per_chunk)
    keep_draws = max((config.num_steps - burn_chunks * steps_per_chunk) // config.thinning, 1)
    sample_chunks = math.ceil(keep_draws / config.chunk_draws)
    return _Schedule(burn_chunks, keep_draws, sample_chunks, steps_per_chunk)


def _cost(config: SGLDConfig, static: _Static, n: int, chunks: int) -> Cost:
    steps = chunks * config.chunk_draws * config.thinning * config.num_chains
    equiv = steps * static.batch_size / n
    if static.full_batch:
        equiv += chunks * config.chunk_draws * config.num_chains * FORWARD_COST
    return Cost(steps, equiv)


def run(
    problem: Problem,
    config: SGLDConfig | None = None,
    *,
    seed: int = 0,
    budget_sec: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MethodResult:
    """Run SGLD chains from w* and estimate the LLC."""
    config = config or SGLDConfig()
    started = time.perf_counter()
    static = _static(problem, config)
    # Before the loop, so that the loop's budget accounts for it (tr(C) is computed once
    # per problem: seconds at 10⁴ parameters).
    heat = _heat(problem, config, static.batch_size)
    init, chunk = _compiled(static, shape_of(problem))
    data, post = cast_problem(problem, config.precision)
    full = cast_full_batch(problem, config.precision)
    hp = _hp(config, problem.n_beta, _curvature(problem, config))
    chains, L0 = init(full, post, hp, _noise_variance(problem, static, post.w_star.dtype))
    L0 = float(L0)
    schedule = _schedule(config)
    loop = ChunkLoop(
        lambda state, keys: chunk(state, keys, data, full, post, hp),
        num_chains=config.num_chains,
        L0=L0,
        n_beta=problem.n_beta,
        d=problem.d,
    )
    drive = loop.run(
        chains,
        jax.random.key(seed),
        num_chunks=schedule.burn_chunks + schedule.sample_chunks,
        discard=schedule.burn_chunks,
        keep_draws=schedule.keep_draws,
        deadline=None if budget_sec is None else started + budget_sec,
        progress=progress,
    )
    minibatch = {"llc": None}
    if drive.minibatch_losses is not None and drive.status != "diverged":
        minibatch = estimate(drive.minibatch_losses, L0, problem.n_beta)
    result = result_from_drive(
        "psgld" if isinstance(config, PSGLDConfig) else "sgld",
        drive,
        L0=L0,
        n_beta=problem.n_beta,
        cost=_cost(config, static, problem.n, drive.chunks_done),
        started=started,
        seed=seed,
        num_chains=config.num_chains,
        diagnostics={
            "llc_estimator": config.llc_estimator,
            "batch_size": static.batch_size,
            **heat,
            "llc_minibatch": minibatch["llc"],
            "burn_in_steps": schedule.burn_chunks * schedule.steps_per_chunk,
            "L0_run_precision": L0,
        },
    )
    return result
