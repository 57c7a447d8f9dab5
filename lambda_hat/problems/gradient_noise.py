"""How noisy one data row's gradient is at w*, and how much a minibatch heats SGLD.

A minibatch of b rows, drawn with replacement, estimates ∇L_n with covariance C/b, C the
covariance over rows of one row's loss gradient. SGLD's drift (η/2)·nβ·∇L then carries
noise of covariance η²(nβ)²C/(4b) on top of the Langevin noise η·I. In a quadratic well
that raises E[nβ(L_n − L0)], and so the LLC estimate, by

    heat = η·(nβ)²·tr(C) / (8b)            (LLC units)

whatever the curvature: a stiff direction is heated more per unit of noise but also has
more of it. Under per-nβ steps (η = s/nβ) the heat grows like s·nβ·tr(C)/b: a recipe's
batch must grow with nβ for its bias to stay put (docs/benchmarks.md, the scale ladder).

C is taken at w*, so the heat describes the chain only while its excursions barely change
the rows' residuals: while the posterior's mean excess loss, at most d/(2nβ), is small
against L0 (``heat_is_predictable``). A classifier that fits its training set (L0 ≈ 10⁻⁴)
has almost no gradient noise at w* (tr(C) ≈ 10⁻⁵) and plenty where its chains go.

>>> import jax.numpy as jnp
>>> from lambda_hat.problems.models import layer_shapes
>>> from lambda_hat.problems.posterior import Arch, LossData
>>> arch = Arch(layer_shapes((1, 1), bias=False), None)       # y ≈ w·x, one parameter
>>> data = LossData(jnp.array([[1.0], [-1.0]]), jnp.array([[1.0], [1.0]]), jnp.float64(1.0))
>>> gradient_noise_trace(jnp.zeros(1), data, arch)    # row gradients −1 and +1
2.0
>>> gradient_noise_variance(jnp.zeros(1), data, arch)  # per coordinate: diag(C)
array([2.])
>>> minibatch_heat(eta=1e-3, n_beta=100.0, noise_trace=2.0, batch_size=25)
0.1
>>> heat_is_predictable(d=12, n_beta=200.0, L0=1.0), heat_is_predictable(1210, 240.0, 5.6e-4)
(True, False)
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.problems.posterior import Arch, LossData, empirical_loss

MAX_ROWS = 4096  # rows tr(C) is estimated on: a few per cent of sampling error
CHUNK_ROWS = 256  # rows per compiled pass: chunk × d gradients in memory at once
# Largest excess-to-L0 ratio d/(2·nβ·L0) at which C at w* stands for C along the chain. At
# 0.086 (a linear regression in tests/test_units.py) the heat measured 15 % above it.
MAX_EXCESS_RATIO = 0.1


@partial(jax.jit, static_argnames="arch")
def _row_gradients(w: jax.Array, x: jax.Array, y: jax.Array, sigma, arch: Arch) -> jax.Array:
    def one(xi, yi):
        return jax.grad(empirical_loss)(w, LossData(xi[None], yi[None], sigma), arch)

    return jax.vmap(one)(x, y)


def gradient_noise_variance(
    w: jax.Array, data: LossData, arch: Arch, max_rows: int = MAX_ROWS, seed: int = 0
) -> np.ndarray:
    """diag(C): per coordinate, the variance over data rows of one row's loss gradient at
    ``w`` (every row when n ≤ ``max_rows``, else a seeded sample of them; unbiased, n − 1)."""
    n = int(data.x.shape[0])
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    total = np.zeros(int(w.shape[0]))
    squares = np.zeros(int(w.shape[0]))
    for start in range(0, len(rows), CHUNK_ROWS):
        index = jnp.asarray(rows[start : start + CHUNK_ROWS])
        grads = np.asarray(_row_gradients(w, data.x[index], data.y[index], data.sigma, arch))
        total += grads.sum(axis=0)
        squares += np.sum(grads**2, axis=0)
    m = len(rows)
    if m < 2:
        return np.zeros(int(w.shape[0]))
    mean = total / m
    return np.maximum((squares - m * mean**2) / (m - 1), 0.0)


def gradient_noise_trace(
    w: jax.Array, data: LossData, arch: Arch, max_rows: int = MAX_ROWS, seed: int = 0
) -> float:
    """tr(C): the summed variance over data rows of one row's loss gradient at ``w``."""
    return float(np.sum(gradient_noise_variance(w, data, arch, max_rows, seed)))


def minibatch_heat(eta: float, n_beta: float, noise_trace: float, batch_size: int) -> float:
    """The LLC excess a minibatch of ``batch_size`` rows adds at step size ``eta``."""
    return eta * n_beta**2 * noise_trace / (8.0 * batch_size)


def batch_for_heat(eta: float, n_beta: float, noise_trace: float, heat: float, n: int) -> int:
    """The smallest batch (at most n) whose minibatch heat is at most ``heat``."""
    needed = math.ceil(eta * n_beta**2 * noise_trace / (8.0 * heat))
    return int(min(max(needed, 1), n))


def heat_is_predictable(d: int, n_beta: float, L0: float) -> bool:
    """Whether tr(C) at w* describes the chain: the posterior's mean excess loss, at most
    d/(2nβ), is under ``MAX_EXCESS_RATIO`` of L0."""
    return L0 > 0 and d / (2.0 * n_beta * L0) <= MAX_EXCESS_RATIO
