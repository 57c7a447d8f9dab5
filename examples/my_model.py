"""A custom problem in plain JAX: a small tanh classifier on a two-moons-like data set.

``examples/my_model.yaml`` names ``examples.my_model:make_problem``; run it from the
repository root with ``python flows/tune.py --problems examples/my_model.yaml``. Your own
factory looks the same: return a ``CustomProblem`` with your model's ``apply(params, x)``,
its parameters (any pytree: a Flax ``variables`` dict or an Equinox model's arrays work as
they are), your data and your likelihood, and, if you have one, your trained ``w_star``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.problems.custom import CustomProblem


def moons(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles with Gaussian noise; labels 0 and 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    angle = rng.uniform(0.0, np.pi, n)
    x = np.where(
        labels[:, None] == 0,
        np.column_stack([np.cos(angle), np.sin(angle)]),
        np.column_stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)]),
    )
    return x + noise * rng.normal(size=x.shape), labels


def apply(params: dict, x: jax.Array) -> jax.Array:
    """Logits (n, 2) of a one-hidden-layer tanh network."""
    hidden = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return hidden @ params["out"]["w"] + params["out"]["b"]


def make_problem(n: int = 400, hidden: int = 3, noise: float = 0.3, seed: int = 0):
    x, labels = moons(n, noise, seed)
    rng = np.random.default_rng(seed + 1)
    params = {
        "hidden": {"w": rng.normal(size=(2, hidden)), "b": np.zeros(hidden)},
        "out": {"w": rng.normal(size=(hidden, 2)) / np.sqrt(hidden), "b": np.zeros(2)},
    }
    return CustomProblem(apply=apply, params=params, x=x, y=labels, likelihood="categorical")
