"""Deterministic data: a teacher network's inputs and noisy targets, or bundled digits.

Targets are ``y`` (n × outputs, float64): real values for a Gaussian likelihood, one-hot
rows for a categorical one (so minibatches and second moments index ``y`` the same way).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lambda_hat.problems.models import (
    activation_of,
    forward,
    layer_shapes,
    low_rank_factors,
    model_layers,
    random_params,
)
from lambda_hat.problems.spec_fields import DIGITS_CLASSES
from lambda_hat.problems.specs import MLPModel, ProblemSpec


class Dataset(NamedTuple):
    x: np.ndarray  # (n, input width), float64
    y: np.ndarray  # (n, output width), float64: targets, or one-hot labels
    teacher: np.ndarray  # flat teacher parameters (empty for real data)


def make_teacher(spec: ProblemSpec, rng: np.random.Generator) -> np.ndarray:
    if isinstance(spec.model, MLPModel):
        layers = layer_shapes(spec.teacher_widths, spec.model.bias)
        return random_params(rng, layers, spec.teacher.weight_scale)
    return low_rank_factors(rng, model_layers(spec), spec.teacher.rank, spec.teacher.weight_scale)


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float64)[labels]


def digits(n: int, seed: int) -> Dataset:
    """``n`` of scikit-learn's bundled 8×8 digits (a ``seed``-chosen subset when n < 1 797),
    pixels scaled from 0…16 to [−1, 1], labels one-hot."""
    from sklearn.datasets import load_digits  # ships the images: nothing is downloaded

    images, labels = load_digits(return_X_y=True)
    rows = np.random.default_rng(np.random.SeedSequence([seed, 2])).permutation(len(labels))[:n]
    x = images[np.sort(rows)].astype(np.float64) / 8.0 - 1.0
    return Dataset(x=x, y=one_hot(labels[np.sort(rows)], DIGITS_CLASSES), teacher=np.zeros(0))


def make_dataset(spec: ProblemSpec) -> Dataset:
    """The same spec always gives the same arrays (NumPy PCG64 streams from ``spec.seed``)."""
    if spec.data.source == "digits":
        return digits(spec.data.n, spec.seed)
    teacher_rng, input_rng, noise_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(3)
    )
    teacher = make_teacher(spec, teacher_rng)
    n, n_in = spec.data.n, spec.widths[0]
    scale = spec.data.input.scale
    if spec.data.input.dist == "normal":
        x = input_rng.normal(0.0, scale, (n, n_in))
    else:
        x = input_rng.uniform(-scale, scale, (n, n_in))
    teacher_layers = (
        layer_shapes(spec.teacher_widths, spec.model.bias)
        if isinstance(spec.model, MLPModel)
        else model_layers(spec)
    )
    clean = np.asarray(forward(teacher, x, teacher_layers, activation_of(spec)))
    if spec.data.likelihood == "categorical":  # each label drawn from softmax(logits)
        p = np.exp(clean - clean.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        labels = (noise_rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
        labels = np.minimum(labels, clean.shape[1] - 1)  # rounding in the last cumsum
        return Dataset(x=x, y=one_hot(labels, clean.shape[1]), teacher=teacher)
    y = clean + spec.data.noise_sigma * noise_rng.normal(0.0, 1.0, clean.shape)
    return Dataset(x=x, y=y, teacher=teacher)
