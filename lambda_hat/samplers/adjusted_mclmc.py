"""A second, independent sampler for the reference: Metropolis-adjusted MCLMC (BlackJAX).

Where no exact answer exists (MLPs, classifiers, your own models), a reference is only as
good as NUTS's mixing, and NUTS's own diagnostics (R-hat, ESS, two halves of its chains)
cannot see a region every NUTS chain misses alike, or a posterior sampled wrongly. A
sampler with other dynamics and another adaptation, Metropolis-adjusted (so unbiased
like NUTS) isokinetic Langevin dynamics with BlackJAX's own tuning of L, the step size and
a diagonal preconditioner (``adjusted_mclmc_find_L_and_step_size``), estimates the same
LLC independently; ``lambda_hat.reference.quality.judge`` compares the two.

Each chain tunes on its own and starts at w*, like the reference's; chains are vmapped
in one compiled call. Writes no file.
"""

from __future__ import annotations

import time
from functools import partial

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc import adjusted_mclmc

from lambda_hat.problems.posterior import Arch, PosteriorParams, empirical_loss, log_density
from lambda_hat.problems.targets import Problem
from lambda_hat.samplers.estimator import llc_from_losses

TARGET_ACCEPT = 0.9  # BlackJAX's tuning aims its step size at this acceptance rate


def _kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix=1.0,
            integration_steps_params=(1,)):  # fmt: skip
    """BlackJAX's adjusted MCLMC kernel in the argument order its tuner calls."""
    return adjusted_mclmc.build_kernel()(
        rng_key, state, logdensity_fn, step_size,
        integration_steps_params=integration_steps_params,
        inverse_mass_matrix=inverse_mass_matrix,
    )  # fmt: skip


@partial(jax.jit, static_argnames=("arch", "num_tune", "num_draws"))
def _chains(keys, data, post: PosteriorParams, arch: Arch, num_tune: int, num_draws: int):
    def logdensity(w):
        return log_density(w, data, post, arch)

    def one_chain(key):
        tune_key, sample_key = jax.random.split(key)
        state = adjusted_mclmc.init(post.w_star, logdensity)
        state, params, tune_grads = blackjax.adjusted_mclmc_find_L_and_step_size(
            _kernel, logdensity, num_tune, state, tune_key, target=TARGET_ACCEPT
        )
        steps = jnp.maximum(1, jnp.round(params.L / params.step_size)).astype(jnp.int32)

        def step(state, step_key):
            state, info = _kernel(
                step_key, state, logdensity, params.step_size, params.inverse_mass_matrix,
                (steps,),
            )  # fmt: skip
            return state, (empirical_loss(state.position, data, arch), info.acceptance_rate)

        _, (losses, acceptance) = jax.lax.scan(step, state, jax.random.split(sample_key, num_draws))
        return losses, acceptance, tune_grads + steps * num_draws

    return jax.vmap(one_chain)(keys)


def run(
    problem: Problem, *, num_chains: int, num_tune: int, num_draws: int, seed: int
) -> dict[str, float | int | str]:
    """The LLC by adjusted MCLMC: ``num_chains`` chains, ``num_tune`` tuning steps and
    ``num_draws`` kept draws each. Returns what ``ref.json`` keeps as ``cross_check``."""
    start = time.perf_counter()
    keys = jax.random.split(jax.random.key(seed), num_chains)
    data = problem.full_batch_data
    losses, acceptance, grads = _chains(
        keys, data, problem.posterior_params(), problem.arch, num_tune, num_draws
    )
    L0 = float(empirical_loss(problem.w_star, data, problem.arch))
    estimate = llc_from_losses(np.asarray(losses), L0, problem.n_beta)
    return {
        "algorithm": "adjusted_mclmc",
        "llc": float(estimate.llc),
        "se": float(estimate.se),
        "rhat": float(estimate.rhat),
        "ess": float(estimate.ess),
        "acceptance": float(np.mean(acceptance)),
        "grad_evals": int(np.sum(grads)),
        "runtime_sec": time.perf_counter() - start,
    }
