"""Toy models of superposition (Elhage et al. 2022), as a custom problem the presets name.

``F`` sparse features x ∈ [0, 1]^F (each non-zero with probability 1 − ``sparsity``,
then uniform) are squeezed into ``hidden`` < F dimensions and read back:
x̂ = ReLU(Wᵀ W x + b), with W: hidden × F and b ∈ R^F. L_n is the Gaussian NLL of
reconstructing x with σ = 1/√2, i.e. the mean squared error Σ_i (x_i − x̂_i)² that
Chen et al. (2023) estimated the LLC of (their 6-feature, 2-dimensional model has 18
parameters). The ``tms`` preset names ``lambda_hat.problems.tms:make_problem``, so this
is also the worked example of a factory that ships inside a package.

>>> problem = make_problem(features=6, hidden=2, n=100)
>>> problem.x.shape, problem.apply(problem.params, problem.x).shape
((100, 6), (100, 6))
"""

from __future__ import annotations

import math

import jax
import numpy as np

from lambda_hat.problems.custom import CustomProblem


def apply(params: dict, x: jax.Array) -> jax.Array:
    """ReLU(Wᵀ W x + b) for a batch of rows x (n × F)."""
    return jax.nn.relu(x @ params["W"].T @ params["W"] + params["b"])


def make_problem(
    features: int = 6, hidden: int = 2, sparsity: float = 0.8, n: int = 1000, seed: int = 0
) -> CustomProblem:
    if not (1 <= hidden < features and 0.0 <= sparsity < 1.0 and n >= 2):
        raise ValueError("need 1 <= hidden < features, 0 <= sparsity < 1 and n >= 2")
    rng = np.random.default_rng(seed)
    present = rng.random((n, features)) >= sparsity
    x = present * rng.uniform(0.0, 1.0, (n, features))
    params = {
        "W": rng.normal(0.0, 1.0 / math.sqrt(hidden), (hidden, features)),
        "b": np.zeros(features),
    }
    return CustomProblem(apply=apply, params=params, x=x, y=x, sigma=1 / math.sqrt(2))
