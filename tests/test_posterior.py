"""The loss from the data's second moments is the loss from the rows (linear networks)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lambda_hat.problems.posterior import (
    Moments,
    empirical_loss,
    is_linear,
    log_density,
    moments_of,
)
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import sampled_data

from .conftest import make_spec


@pytest.mark.parametrize(
    "model",
    [
        {"family": "rrr", "m_in": 3, "hidden": 2, "n_out": 3},
        {"family": "dln", "widths": [4, 4, 3, 4]},
        {"family": "dln", "widths": [3, 2]},
    ],
)
def test_moments_give_the_same_loss_and_gradient_as_the_rows(model):
    problem = build_problem(make_spec(model=model, teacher={"rank": 1}))
    moments = moments_of(problem.data)
    post = problem.posterior_params()
    rng = np.random.default_rng(0)
    # At w* (where the estimator subtracts L0) and at points as far out as a chain goes.
    for scale in (0.0, 0.03, 0.3, 1.0):
        w = problem.w_star + scale * jnp.asarray(rng.normal(size=problem.d))
        rows, grad_rows = jax.value_and_grad(log_density)(w, problem.data, post, problem.arch)
        moms, grad_moms = jax.value_and_grad(log_density)(w, moments, post, problem.arch)
        # nβ·ΔL_n is what the LLC averages: demand agreement far below its O(1) size.
        assert abs(float(rows - moms)) < 1e-9 * max(1.0, abs(float(rows)))
        np.testing.assert_allclose(grad_moms, grad_rows, rtol=1e-9, atol=1e-9)


def test_only_linear_networks_use_moments():
    linear = build_problem(make_spec())
    mlp = build_problem(
        make_spec(
            model={"family": "mlp", "widths": [2, 3, 1], "activation": "tanh"},
            teacher={},
            optimum={"init": "random"},
        )
    )
    assert is_linear(linear.arch) and not is_linear(mlp.arch)
    assert isinstance(sampled_data(linear, ReferenceConfig()), Moments)
    assert not isinstance(sampled_data(mlp, ReferenceConfig()), Moments)
    rows = ReferenceConfig(sufficient_statistics=False)
    assert not isinstance(sampled_data(linear, rows), Moments)
    assert float(empirical_loss(linear.w_star, moments_of(linear.data), linear.arch)) == (
        pytest.approx(linear.L0, rel=1e-12)
    )
