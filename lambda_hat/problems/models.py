"""Networks as pure functions of a flat float64 parameter vector.

Parameters are one flat vector (what samplers move); ``layer_shapes`` says how it splits
into per-layer weights ``W (out×in)`` and biases, in order. Everything here is static in
the model spec, so jitted code can take the spec as a static argument.
"""

from __future__ import annotations

from itertools import pairwise
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.problems.specs import MLPModel, ProblemSpec

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "gelu": jax.nn.gelu}


class Layer(NamedTuple):
    n_in: int
    n_out: int
    bias: bool


def layer_shapes(widths: tuple[int, ...], bias: bool) -> tuple[Layer, ...]:
    return tuple(Layer(a, b, bias) for a, b in pairwise(widths))


def model_layers(spec: ProblemSpec) -> tuple[Layer, ...]:
    bias = isinstance(spec.model, MLPModel) and spec.model.bias
    return layer_shapes(spec.widths, bias)


def num_params(layers: tuple[Layer, ...]) -> int:
    return sum(layer.n_in * layer.n_out + (layer.n_out if layer.bias else 0) for layer in layers)


def unflatten(w: jax.Array, layers: tuple[Layer, ...]) -> list[tuple[jax.Array, jax.Array | None]]:
    """Split a flat vector into ``[(W, b or None), …]``."""
    params, offset = [], 0
    for layer in layers:
        size = layer.n_in * layer.n_out
        weight = w[offset : offset + size].reshape(layer.n_out, layer.n_in)
        offset += size
        bias = None
        if layer.bias:
            bias = w[offset : offset + layer.n_out]
            offset += layer.n_out
        params.append((weight, bias))
    return params


def flatten(params: list[tuple[np.ndarray, np.ndarray | None]]) -> np.ndarray:
    parts = []
    for weight, bias in params:
        parts.append(np.asarray(weight).ravel())
        if bias is not None:
            parts.append(np.asarray(bias).ravel())
    return np.concatenate(parts).astype(np.float64)


def forward(
    w: jax.Array, x: jax.Array, layers: tuple[Layer, ...], activation: str | None
) -> jax.Array:
    """Network output for inputs ``x`` (n×in). ``activation=None`` means linear layers."""
    act = _ACTIVATIONS[activation] if activation else None
    params = unflatten(w, layers)
    h = x
    for index, (weight, bias) in enumerate(params):
        h = h @ weight.T
        if bias is not None:
            h = h + bias
        if act is not None and index < len(params) - 1:
            h = act(h)
    return h


def activation_of(spec: ProblemSpec) -> str | None:
    return spec.model.activation if isinstance(spec.model, MLPModel) else None


def random_params(rng: np.random.Generator, layers: tuple[Layer, ...], scale: float) -> np.ndarray:
    """Gaussian weights with variance scale²/fan_in, zero biases."""
    params = []
    for layer in layers:
        weight = rng.normal(0.0, scale / np.sqrt(layer.n_in), (layer.n_out, layer.n_in))
        params.append((weight, np.zeros(layer.n_out) if layer.bias else None))
    return flatten(params)


def low_rank_factors(
    rng: np.random.Generator, layers: tuple[Layer, ...], rank: int, scale: float
) -> np.ndarray:
    """Linear-network weights where every factor is a random matrix of rank exactly ``rank``.

    The product then has rank ``rank`` generically, which is what the closed-form
    learning coefficients of RRR and DLN assume of the true parameter.
    """
    params = []
    for layer in layers:
        left = rng.normal(0.0, 1.0, (layer.n_out, rank))
        right = rng.normal(0.0, 1.0, (rank, layer.n_in))
        weight = scale * left @ right / np.sqrt(max(rank, 1) * layer.n_in)
        params.append((weight, None))
    return flatten(params)
