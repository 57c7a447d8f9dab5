"""MCLMC (BlackJAX ``mclmc``) on the localized tempered posterior.

Either fixed (L, step size), or tuned per chain (vmapped) with BlackJAX's
``mclmc_find_L_and_step_size``, whose knobs are then the hyperparameters. Every chain
starts at w*; the isokinetic McLachlan integrator costs two full-data gradients a step.
BlackJAX reverts a step that produced NaNs; a chain that has to revert most of its steps
is reported as diverged (otherwise it would sit at w* and report LLC ≈ 0).

>>> from lambda_hat.problems.specs import ProblemSpec
>>> from lambda_hat.problems.targets import build_problem
>>> spec = ProblemSpec.model_validate({"name": "doc", "model": {"family": "dln",
...     "widths": [2, 2]}, "teacher": {"rank": 2}, "data": {"n": 200}})
>>> result = run(build_problem(spec), MCLMCConfig(num_steps=1000, tune_num_steps=1000))
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
from blackjax.adaptation.mclmc_adaptation import MCLMCAdaptationState

from lambda_hat.problems.posterior import Arch, empirical_loss, log_density
from lambda_hat.problems.targets import Problem
from lambda_hat.samplers.chunks import ChunkLoop, ChunkOut
from lambda_hat.samplers.common import (
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
from lambda_hat.samplers.configs import MCLMCConfig

GRADS_PER_STEP = 2  # isokinetic McLachlan: two force evaluations per step


class _Static(NamedTuple):
    arch: Arch
    tuned: bool
    tune_num_steps: int
    fracs: tuple[float, float, float]
    diagonal_preconditioning: bool
    num_chains: int
    precision: str
    chunk_draws: int


def _logdensity(data, post, static: _Static):
    return partial(log_density, data=data, post=post, arch=static.arch)


def _setup(keys, data, post, hp, static: _Static):
    """Per-chain initial state at w*, then (tuned mode) BlackJAX's L and step-size tuning."""
    logdensity = _logdensity(data, post, static)
    kernel = blackjax.mcmc.mclmc.build_kernel()

    def one_chain(key):
        key_init, key_tune = jax.random.split(key)
        state = blackjax.mcmc.mclmc.init(post.w_star, logdensity, key_init)
        d = post.w_star.shape[0]
        if not static.tuned:
            params = MCLMCAdaptationState(hp["L"], hp["step_size"], jnp.ones(d, post.w_star.dtype))
            return state, params, jnp.zeros((), jnp.int32)
        frac1, frac2, frac3 = static.fracs
        state, params, steps = blackjax.mclmc_find_L_and_step_size(
            kernel,
            static.tune_num_steps,
            state,
            key_tune,
            logdensity_fn=logdensity,
            frac_tune1=frac1,
            frac_tune2=frac2,
            frac_tune3=frac3,
            desired_energy_var=hp["desired_energy_var"],
            trust_in_estimate=hp["trust_in_estimate"],
            num_effective_samples=hp["num_effective_samples"],
            diagonal_preconditioning=static.diagonal_preconditioning,
            l_factor=hp["l_factor"],
        )
        return state, params, jnp.asarray(steps, jnp.int32)

    states, params, steps = jax.vmap(one_chain)(keys)
    return states, params, steps, empirical_loss(post.w_star, data, static.arch)


def _chunk(carry, keys, data, post, hp, static: _Static):
    states, params = carry
    logdensity = _logdensity(data, post, static)
    kernel = blackjax.mcmc.mclmc.build_kernel()

    def one_chain(state, params, key):
        def kept_draw(carry, key):
            def step(i, carry):
                state, bad = carry
                state, info = kernel(
                    jax.random.fold_in(key, i),
                    state,
                    logdensity,
                    params.inverse_mass_matrix,
                    params.L,
                    params.step_size,
                )
                return state, bad + (1 - info.nonans.astype(jnp.int32))

            state, bad = jax.lax.fori_loop(0, hp["thinning"], step, carry)
            # L_n from the log density, as in the reference: no extra forward pass.
            prior = 0.5 * post.gamma * jnp.sum((state.position - post.w_star) ** 2)
            loss = -(state.logdensity + prior) / post.n_beta
            return (state, bad), loss

        zero = jnp.zeros((), jnp.int32)
        (state, bad), losses = jax.lax.scan(
            kept_draw, (state, zero), jax.random.split(key, static.chunk_draws)
        )
        return state, losses, bad / (static.chunk_draws * hp["thinning"])

    states, losses, bad = jax.vmap(one_chain)(states, params, keys)
    return (states, params), ChunkOut(losses, bad.astype(losses.dtype))


HP_NAMES = (
    "desired_energy_var",
    "trust_in_estimate",
    "num_effective_samples",
    "l_factor",
)


def _hp(config: MCLMCConfig) -> dict[str, jax.Array]:
    values = {name: getattr(config, name) for name in HP_NAMES}
    values["L"] = config.L or 1.0  # unused in tuned mode
    values["step_size"] = config.step_size or 0.1
    out = scalars(values, config.precision)
    out["thinning"] = jnp.asarray(config.thinning, jnp.int32)
    return out


@lru_cache(maxsize=32)
def _compiled(static: _Static, shape: Shape):
    """Ahead-of-time compiled setup and chunk for one (problem shape, static config)."""
    count_compile()
    _, post = data_spec(shape, static.precision)
    data = full_batch_spec(shape, static.precision, static.arch)
    hp = jax.eval_shape(lambda: _hp(MCLMCConfig(precision=static.precision)))
    keys = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), static.num_chains))
    setup = jax.jit(_setup, static_argnames="static")
    setup = setup.lower(keys, data, post, hp, static=static).compile()
    states, params, _, _ = setup.out_info
    chunk = jax.jit(_chunk, static_argnames="static")
    chunk = chunk.lower((states, params), keys, data, post, hp, static=static).compile()
    return setup, chunk


def _static(problem: Problem, config: MCLMCConfig) -> _Static:
    return _Static(
        arch=problem.arch,
        tuned=config.mode == "tuned",
        tune_num_steps=config.tune_num_steps,
        fracs=(config.frac_tune1, config.frac_tune2, config.frac_tune3),
        diagonal_preconditioning=config.diagonal_preconditioning,
        num_chains=config.num_chains,
        precision=config.precision,
        chunk_draws=config.chunk_draws,
    )


def run(
    problem: Problem,
    config: MCLMCConfig | None = None,
    *,
    seed: int = 0,
    budget_sec: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MethodResult:
    """Tune (or not), then run MCLMC chains from w* and estimate the LLC."""
    config = config or MCLMCConfig()
    if problem.d < 2:
        raise ValueError(f"mclmc needs at least 2 parameters, problem {problem.pid} has 1")
    started = time.perf_counter()
    static = _static(problem, config)
    setup, chunk = _compiled(static, shape_of(problem))
    _, post = cast_problem(problem, config.precision)
    data = cast_full_batch(problem, config.precision)  # full-data gradients only
    hp = _hp(config)
    key_setup, key_sample = jax.random.split(jax.random.key(seed))
    states, params, tune_steps, L0 = setup(
        jax.random.split(key_setup, config.num_chains), data, post, hp
    )
    L0 = float(L0)  # in the run's precision, so L_n − L0 carries no rounding bias
    keep_draws = max(config.num_steps // config.thinning, 1)
    loop = ChunkLoop(
        lambda carry, keys: chunk(carry, keys, data, post, hp),
        num_chains=config.num_chains,
        L0=L0,
        n_beta=problem.n_beta,
        d=problem.d,
    )
    drive = loop.run(
        (states, params),
        key_sample,
        num_chunks=math.ceil(keep_draws / config.chunk_draws),
        discard=0,
        keep_draws=keep_draws,
        deadline=None if budget_sec is None else started + budget_sec,
        progress=progress,
    )
    steps = int(jnp.sum(tune_steps)) + (
        drive.chunks_done * config.chunk_draws * config.thinning * config.num_chains
    )
    result = result_from_drive(
        "mclmc",
        drive,
        L0=L0,
        n_beta=problem.n_beta,
        cost=Cost(GRADS_PER_STEP * steps, float(GRADS_PER_STEP * steps)),
        started=started,
        seed=seed,
        num_chains=config.num_chains,
        diagnostics={
            "mode": config.mode,
            "L_mean": float(jnp.mean(params.L)),
            "step_size_mean": float(jnp.mean(params.step_size)),
            "tuning_steps": int(jnp.sum(tune_steps)),
        },
    )
    return result
