"""Every cheap method reads a linear network's second moments for its full-data work, and
gets what the rows give: the same L0, gradients and chunk outputs, to 1e-9.

Each test calls one runner's own kernels (jitted here, not the cached ahead-of-time
compiles, which are built for the moments only) twice from the same state and keys: once
with the rows, once with the moments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat.problems.posterior import LossData, Moments, log_density
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers import mclmc, sgld, vi
from lambda_hat.samplers.common import cast_full_batch, cast_problem
from lambda_hat.samplers.configs import MCLMCConfig, SGLDConfig, VIConfig

from .conftest import make_spec

RTOL = 1e-9


@pytest.fixture(scope="module")
def problem():
    # A three-layer DLN, so that the end-to-end matrix is a real product.
    return build_problem(make_spec(model={"family": "dln", "widths": [3, 3, 2, 3]}))


def both(problem):
    rows, post = cast_problem(problem, "float64")
    moments = cast_full_batch(problem, "float64")
    assert isinstance(moments, Moments) and isinstance(rows, LossData)
    return rows, moments, post


def close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=RTOL, atol=RTOL)


def assert_same_density(problem, positions, rows, moments, post):
    """log π and ∇log π at the method's own positions: what its kernels read."""
    for w in np.asarray(positions).reshape(-1, problem.d)[:8]:
        on_rows = jax.value_and_grad(log_density)(jnp.asarray(w), rows, post, problem.arch)
        on_moments = jax.value_and_grad(log_density)(jnp.asarray(w), moments, post, problem.arch)
        close(on_rows, on_moments)


def test_sgld_start_and_full_batch_losses(problem):
    rows, moments, post = both(problem)
    config = SGLDConfig(step_size=1e-3, batch_size=64, chunk_draws=20, thinning=3)
    static = sgld._static(problem, config)
    hp = sgld._hp(config, problem.n_beta)
    init = jax.jit(sgld._init, static_argnames="static")
    variance = jnp.asarray(problem.gradient_noise_variance)
    (chains_r, L0_r), (chains_m, L0_m) = (
        init(d, post, hp, variance, static=static) for d in (rows, moments)
    )
    close((chains_r, L0_r), (chains_m, L0_m))  # V: the gradient at w*, from either source
    keys = jax.random.split(jax.random.key(3), config.num_chains)
    chunk = jax.jit(sgld._chunk, static_argnames="static")
    # The minibatch steps read rows in both; only the L_n at each kept draw differs in source.
    after_r, out_r = chunk(chains_r, keys, rows, rows, post, hp, static=static)
    after_m, out_m = chunk(chains_r, keys, rows, moments, post, hp, static=static)
    close((after_r, out_r), (after_m, out_m))
    assert float(jnp.std(out_m.losses)) > 0  # the chains moved: the comparison is not vacuous
    assert_same_density(problem, after_m.w, rows, moments, post)


def test_vi_elbo_steps_and_draws(problem):
    rows, moments, post = both(problem)
    config = VIConfig(learning_rate=1e-2, chunk_steps=50, num_eval_samples=16)
    static = vi._static(problem, config)
    hp = vi._hp(config)
    setup = jax.jit(vi._setup, static_argnames="static")
    (states, L0_r), (_, L0_m) = (setup(d, post, hp, static=static) for d in (rows, moments))
    close(L0_r, L0_m)
    keys = jax.random.split(jax.random.key(4), config.num_chains)
    chunk = jax.jit(vi._chunk, static_argnames="static")
    # 50 Adam steps on the ELBO's gradient: the fitted q is the same from either source.
    fitted_r, _ = chunk(states, keys, rows, post, hp, static=static)
    fitted_m, _ = chunk(states, keys, moments, post, hp, static=static)
    close(fitted_r, fitted_m)
    assert float(jnp.max(jnp.abs(fitted_m.mu - states.mu))) > 1e-4  # q moved
    evaluate = jax.jit(vi._evaluate, static_argnames="static")
    close(
        evaluate(fitted_m, keys, rows, static=static),
        evaluate(fitted_m, keys, moments, static=static),
    )
    assert_same_density(problem, fitted_m.mu, rows, moments, post)


def test_mclmc_tuning_and_chunk(problem):
    rows, moments, post = both(problem)
    config = MCLMCConfig(tune_num_steps=200, chunk_draws=3)
    static = mclmc._static(problem, config)
    hp = mclmc._hp(config)
    keys = jax.random.split(jax.random.key(5), config.num_chains)
    setup = jax.jit(mclmc._setup, static_argnames="static")
    tuned_r, tuned_m = (setup(keys, d, post, hp, static=static) for d in (rows, moments))
    # BlackJAX's tuning saw the same posterior. Its 200 steps follow a chaotic trajectory,
    # which grows last-bit rounding differences to ~1e-8 (measured), hence 1e-6 here.
    for x, y in zip(jax.tree.leaves(tuned_r), jax.tree.leaves(tuned_m), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-6)
    states, params, _, _ = tuned_m
    chunk = jax.jit(mclmc._chunk, static_argnames="static")
    # A few steps from one state: not long enough for chaos to show, so 1e-9 again.
    on_rows = chunk((states, params), keys, rows, post, hp, static=static)
    on_moments = chunk((states, params), keys, moments, post, hp, static=static)
    close(on_rows, on_moments)
    assert float(jnp.std(on_moments[1].losses)) > 0
    assert_same_density(problem, on_moments[0][0].position, rows, moments, post)


@pytest.mark.parametrize(
    ("method", "config"),
    [
        ("sgld", SGLDConfig(step_size=1e-3, num_steps=400, batch_size=64)),
        ("vi", VIConfig(num_steps=200, num_eval_samples=16)),
        ("mclmc", MCLMCConfig(num_steps=200, tune_num_steps=200)),
    ],
)
def test_runs_on_linear_problems_compile_for_the_moments(problem, method, config):
    """A whole run goes through the moments path (its compile is keyed by the shape, and
    the arguments it is given are the moments) and gives a finite LLC."""
    module = {"sgld": sgld, "vi": vi, "mclmc": mclmc}[method]
    result = module.run(problem, config, seed=1)
    assert result.status == "ok" and np.isfinite(result.llc_hat)
    assert isinstance(cast_full_batch(problem, config.precision), Moments)
