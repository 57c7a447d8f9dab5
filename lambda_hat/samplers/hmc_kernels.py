"""The reference's jit-able kernels, vmapped over chains: Stan's window adaptation one
step at a time (so that the warmup runs in budgeted chunks) and the sampling chunk.
``lambda_hat.samplers.hmc_reference`` compiles and drives them.

>>> import jax.numpy as jnp
>>> static = Static(arch=None, algorithm="hmc", num_chains=1, num_warmup=100,
...                 chunk_size=10, thinning=1, target_accept=0.8, dense_mass=False,
...                 max_num_doublings=10, num_integration_steps=8)
>>> init, update, final = adaptation(static)
>>> float(final(init(jnp.zeros(3), 1.0))[0])   # no step taken: the initial step size
1.0
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
from blackjax.adaptation import window_adaptation

from lambda_hat.problems.posterior import Arch, LossData, Moments, PosteriorParams, log_density


class Static(NamedTuple):
    """The compile-time part of a run: one compiled warmup and chunk per distinct value."""

    arch: Arch
    algorithm: str
    num_chains: int
    num_warmup: int
    chunk_size: int
    thinning: int
    target_accept: float
    dense_mass: bool
    max_num_doublings: int
    num_integration_steps: int


def algorithm_of(static: Static) -> tuple[Any, dict[str, Any]]:
    if static.algorithm == "nuts":
        return blackjax.nuts, {"max_num_doublings": static.max_num_doublings}
    return blackjax.hmc, {"num_integration_steps": static.num_integration_steps}


def logdensity_of(data: LossData | Moments, post: PosteriorParams, arch: Arch) -> Callable:
    return partial(log_density, data=data, post=post, arch=arch)


def adaptation(static: Static) -> tuple[Callable, Callable, Callable]:
    """Stan's windowed adaptation (dual-averaged step size, Welford mass matrix) as
    ``(init, update, final)``, so that it can run in budgeted chunks.

    ``blackjax.window_adaptation`` runs the whole schedule in one compiled call, which no
    budget can interrupt (a 2 410-parameter MLP spent 368 s there on a 240 s budget).
    ``window_adaptation.base`` is the same algorithm one step at a time: deprecated in
    BlackJAX 1.7 but public. ``tests/test_reference.py`` checks that it gives, step for
    step, what ``windowadaptation(...).run`` gives (bit for bit on a smooth target; on a
    real posterior, rounding differences between the two compiled programs flip an
    accept/reject sooner or later, and the chains go on as other, equally valid, draws),
    and that the chunk boundaries change nothing.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return window_adaptation.base(not static.dense_mass, static.target_accept)


def warmup_start(positions, data, post, static: Static):
    """Every chain's sampler state and adaptation state at w* (vmapped)."""
    algorithm, _ = algorithm_of(static)
    init, _, _ = adaptation(static)
    logdensity = logdensity_of(data, post, static.arch)

    def one_chain(position):
        return algorithm.init(position, logdensity), init(position, 1.0)

    return jax.vmap(one_chain)(positions)


def warmup_chunk(carry, keys, schedule, data, post, static: Static):
    """Some steps of the warmup for every chain: ``keys`` (chains, steps) and the slice of
    the schedule they take; returns the carry and the gradient evaluations per chain."""
    algorithm, extra = algorithm_of(static)
    kernel = algorithm.build_kernel()
    _, update, _ = adaptation(static)
    logdensity = logdensity_of(data, post, static.arch)

    def one_chain(state, adaptation, chain_keys):
        def step(carry, xs):
            state, adaptation = carry
            key, stage = xs
            state, info = kernel(key, state, logdensity, adaptation.step_size,
                                 adaptation.inverse_mass_matrix, **extra)  # fmt: skip
            adaptation = update(adaptation, stage, state.position, info.acceptance_rate)
            return (state, adaptation), integration_steps(info, static)

        (state, adaptation), grads = jax.lax.scan(step, (state, adaptation), (chain_keys, schedule))
        return state, adaptation, jnp.sum(grads)

    states, adaptations = carry
    states, adaptations, grads = jax.vmap(one_chain)(states, adaptations, keys)
    return (states, adaptations), grads


def warmup_end(adaptations, static: Static):
    """The adapted step size and inverse mass matrix of every chain."""
    _, _, final = adaptation(static)
    step_size, inverse_mass_matrix = jax.vmap(final)(adaptations)
    return {"step_size": step_size, "inverse_mass_matrix": inverse_mass_matrix}


def integration_steps(info, static: Static) -> jax.Array:
    if static.algorithm == "nuts":
        return info.num_integration_steps
    return jnp.full(jnp.shape(info.num_integration_steps), static.num_integration_steps)


def sample_chunk(keys, states, parameters, data, post, static: Static):
    """``chunk_size`` kept draws per chain; returns L_n at each kept draw and counters."""
    algorithm, extra = algorithm_of(static)
    logdensity = logdensity_of(data, post, static.arch)

    def one_chain(key, state, params):
        kernel = algorithm(logdensity, params["step_size"], params["inverse_mass_matrix"], **extra)

        def step(state, key):
            state, info = kernel.step(key, state)
            return state, (info.is_divergent, info.acceptance_rate, info.num_integration_steps)

        def kept_draw(state, key):
            state, (divergent, accept, grads) = jax.lax.scan(
                step, state, jax.random.split(key, static.thinning)
            )
            # L_n from the log density: no extra forward pass per draw.
            prior = 0.5 * post.gamma * jnp.sum((state.position - post.w_star) ** 2)
            loss = -(state.logdensity + prior) / post.n_beta
            return state, (loss, divergent.sum(), accept.mean(), grads.sum())

        state, (losses, divergent, accept, grads) = jax.lax.scan(
            kept_draw, state, jax.random.split(key, static.chunk_size)
        )
        return state, losses, divergent.sum(), accept.mean(), grads  # grads per kept draw

    return jax.vmap(one_chain)(keys, states, parameters)
