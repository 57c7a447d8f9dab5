"""The exact finite-n LLC of any problem with d ≤ 3 parameters, by quadrature over w.

E_π[nβ(L_n − L0)] with π(w) ∝ exp(−nβ(L_n(w) − L0) − (γ/2)‖w − w*‖²) is a ratio of two
integrals over R^d. Each axis gets ``points`` nodes w*_i + a·sinh(u) on a uniform grid in
u (trapezoid weights times the Jacobian a·cosh u): spacing about a near w*, where
a = 0.1/√(nβ·h_max + γ) resolves the posterior's narrowest direction, and growing
geometrically out to ±10/√γ, where the localizing prior alone leaves e⁻⁵⁰. Any likelihood
and any model: the loss is the same ``empirical_loss`` the samplers read, on data rows.
The error is estimated by the caller from two resolutions (``tests/test_quadrature.py``).

>>> from lambda_hat.problems.specs import ProblemSpec
>>> from lambda_hat.problems.targets import build_problem
>>> spec = ProblemSpec.model_validate({"name": "q", "model": {"family": "dln",
...     "widths": [1, 1]}, "teacher": {"rank": 1}, "data": {"n": 100}})
>>> problem = build_problem(spec)      # regular, d = 1: LLC = ½·nβh/(nβh + γ)
>>> h = float(problem.data.x[:, 0] @ problem.data.x[:, 0]) / 100 / 0.25
>>> abs(quadrature_llc(problem) - 0.5 * problem.n_beta * h / (problem.n_beta * h + 1)) < 1e-6
True
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.problems.posterior import Arch, LossData, empirical_loss

MAX_DIM = 3
DEFAULT_POINTS = {1: 4001, 2: 801, 3: 161}


def axis_nodes(centre: float, fine: float, half_width: float, points: int):
    """Nodes and weights on one axis: dense near ``centre``, out to ±``half_width``."""
    u_max = np.arcsinh(half_width / fine)
    u = np.linspace(-u_max, u_max, points)
    du = u[1] - u[0]
    weights = np.full(points, du) * fine * np.cosh(u)
    weights[[0, -1]] *= 0.5
    return centre + fine * np.sinh(u), weights


@partial(jax.jit, static_argnames="arch")
def _losses(grid: jax.Array, data: LossData, arch: Arch) -> jax.Array:
    return jax.lax.map(lambda w: empirical_loss(w, data, arch), grid, batch_size=4096)


def quadrature_llc(problem, points: int | None = None) -> float:
    """E_π[nβ(L_n − L0)] for a built problem with d ≤ 3 (ValueError above)."""
    d = problem.d
    if d > MAX_DIM:
        raise ValueError(f"quadrature needs d <= {MAX_DIM}, got d = {d}")
    points = points or DEFAULT_POINTS[d]
    w_star = np.asarray(problem.w_star)
    n_beta, gamma = problem.n_beta, problem.gamma
    h_max = float(np.linalg.eigvalsh(jax.hessian(empirical_loss)(problem.w_star, problem.data,
                                                                  problem.arch))[-1])  # fmt: skip
    fine = 0.1 / np.sqrt(max(n_beta * h_max, 0.0) + gamma)
    axes = [axis_nodes(c, fine, 10.0 / np.sqrt(gamma), points) for c in w_star]
    nodes = np.stack(np.meshgrid(*(a[0] for a in axes), indexing="ij"), axis=-1).reshape(-1, d)
    weights = np.prod(np.meshgrid(*(a[1] for a in axes), indexing="ij"), axis=0).ravel()
    excess = n_beta * (
        np.asarray(_losses(jnp.asarray(nodes), problem.data, problem.arch)) - problem.L0
    )
    log_density = -excess - 0.5 * gamma * np.sum((nodes - w_star) ** 2, axis=1)
    mass = weights * np.exp(log_density - log_density.max())
    return float(np.sum(mass * excess) / np.sum(mass))
