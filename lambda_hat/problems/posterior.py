"""The empirical loss L_n and the localized tempered posterior shared by every estimator.

log π(w) = −nβ·L_n(w) − (γ/2)·‖w − w*‖²,   β = β0 / log n,
L_n(w)   = (1/n) Σ_i ½‖y_i − f(x_i; w)‖² / σ²   (Gaussian NLL up to a constant), or
L_n(w)   = −(1/n) Σ_i Σ_k y_ik · log softmax(f(x_i; w))_k   (categorical, y one-hot).

For a linear network (dln, rrr: no activation, no bias) f(x; w) = W(w)·x with W the product
of the layer matrices, so L_n(w) = ½[tr(W Σxx Wᵀ) − 2 tr(W Σxy) + Σyy]/σ² depends on the data
only through its second moments. ``Moments`` carries them and every loss here accepts it in
place of ``LossData``: the same function, at a cost independent of n.

>>> import numpy as np
>>> from lambda_hat.problems.models import layer_shapes
>>> rng = np.random.default_rng(0)
>>> arch = Arch(layer_shapes((3, 2, 4), bias=False), None)
>>> data = LossData(jnp.asarray(rng.normal(size=(50, 3))), jnp.asarray(rng.normal(size=(50, 4))),
...                 jnp.float64(0.5))
>>> w = jnp.asarray(rng.normal(size=14))
>>> bool(jnp.allclose(empirical_loss(w, data, arch), empirical_loss(w, moments_of(data), arch)))
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lambda_hat.problems.models import Layer, forward, unflatten


class Arch(NamedTuple):
    """The static part of a loss: layer shapes, activation and likelihood (hashable,
    jit-static)."""

    layers: tuple[Layer, ...]
    activation: str | None
    likelihood: str = "gaussian"  # or "categorical"
    model: Callable[[jax.Array, jax.Array], jax.Array] | None = None  # a custom f(w, x)


class LossData(NamedTuple):
    """The traced part of a loss: data and noise level."""

    x: jax.Array
    y: jax.Array
    sigma: jax.Array


class Moments(NamedTuple):
    """A linear network's data, reduced to what its squared loss depends on."""

    xx: jax.Array  # (in, in): (1/n) Σ x xᵀ
    xy: jax.Array  # (in, out): (1/n) Σ x yᵀ
    yy: jax.Array  # (): (1/n) Σ ‖y‖²
    sigma: jax.Array


def is_linear(arch: Arch) -> bool:
    """A linear Gaussian regression: its loss depends on the data only via ``Moments``."""
    linear = arch.activation is None and not any(layer.bias for layer in arch.layers)
    return linear and arch.likelihood == "gaussian" and arch.model is None


def moments_of(data: LossData) -> Moments:
    """Second moments of the data (float64 sums over n: computed once per problem)."""
    n = data.x.shape[0]
    return Moments(data.x.T @ data.x / n, data.x.T @ data.y / n, jnp.sum(data.y**2) / n, data.sigma)


class PosteriorParams(NamedTuple):
    """Traced posterior constants: w*, nβ, γ."""

    w_star: jax.Array
    n_beta: jax.Array
    gamma: jax.Array


def inverse_temperature(n: int, beta0: float) -> float:
    """β = β0 / log n (Watanabe's WBIC temperature scaled by β0)."""
    return beta0 / math.log(n)


def end_to_end(w: jax.Array, layers: tuple[Layer, ...]) -> jax.Array:
    """The (out × in) matrix a linear network computes: W_L ⋯ W_1."""
    product = None
    for weight, _ in unflatten(w, layers):
        product = weight if product is None else weight @ product
    return product


def empirical_loss(w: jax.Array, data: LossData | Moments, arch: Arch) -> jax.Array:
    if isinstance(data, Moments):  # a trace-time choice: each kind compiles on its own
        matrix = end_to_end(w, arch.layers)
        fit = jnp.sum((matrix @ data.xx) * matrix) - 2.0 * jnp.sum(matrix.T * data.xy)
        return 0.5 * (fit + data.yy) / data.sigma**2
    if arch.model is not None:
        output = arch.model(w, data.x)
    else:
        output = forward(w, data.x, arch.layers, arch.activation)
    if arch.likelihood == "categorical":
        return -jnp.mean(jnp.sum(data.y * jax.nn.log_softmax(output, axis=-1), axis=-1))
    residual = data.y - output
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1)) / data.sigma**2


def log_density(
    w: jax.Array, data: LossData | Moments, post: PosteriorParams, arch: Arch
) -> jax.Array:
    loss = empirical_loss(w, data, arch)
    return -post.n_beta * loss - 0.5 * post.gamma * jnp.sum((w - post.w_star) ** 2)
