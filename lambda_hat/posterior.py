"""The empirical loss L_n and the localized tempered posterior shared by every estimator.

log π(w) = −nβ·L_n(w) − (γ/2)·‖w − w*‖²,   β = β0 / log n,
L_n(w)   = (1/n) Σ_i ½‖y_i − f(x_i; w)‖² / σ²   (Gaussian NLL up to a constant).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lambda_hat.models import Layer, forward


class Arch(NamedTuple):
    """The static part of a loss: layer shapes and activation (hashable, jit-static)."""

    layers: tuple[Layer, ...]
    activation: str | None


class LossData(NamedTuple):
    """The traced part of a loss: data and noise level."""

    x: jax.Array
    y: jax.Array
    sigma: jax.Array


class PosteriorParams(NamedTuple):
    """Traced posterior constants: w*, nβ, γ."""

    w_star: jax.Array
    n_beta: jax.Array
    gamma: jax.Array


def inverse_temperature(n: int, beta0: float) -> float:
    """β = β0 / log n (Watanabe's WBIC temperature scaled by β0)."""
    return beta0 / math.log(n)


def empirical_loss(w: jax.Array, data: LossData, arch: Arch) -> jax.Array:
    residual = data.y - forward(w, data.x, arch.layers, arch.activation)
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1)) / data.sigma**2


def log_density(w: jax.Array, data: LossData, post: PosteriorParams, arch: Arch) -> jax.Array:
    loss = empirical_loss(w, data, arch)
    return -post.n_beta * loss - 0.5 * post.gamma * jnp.sum((w - post.w_star) ** 2)
