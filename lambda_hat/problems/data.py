"""Deterministic synthetic data: a teacher network, inputs, and Gaussian-noise targets."""

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
from lambda_hat.problems.specs import MLPModel, ProblemSpec


class Dataset(NamedTuple):
    x: np.ndarray  # (n, input width), float64
    y: np.ndarray  # (n, output width), float64
    teacher: np.ndarray  # flat teacher parameters


def make_teacher(spec: ProblemSpec, rng: np.random.Generator) -> np.ndarray:
    if isinstance(spec.model, MLPModel):
        layers = layer_shapes(spec.teacher_widths, spec.model.bias)
        return random_params(rng, layers, spec.teacher.weight_scale)
    return low_rank_factors(rng, model_layers(spec), spec.teacher.rank, spec.teacher.weight_scale)


def make_dataset(spec: ProblemSpec) -> Dataset:
    """The same spec always gives the same arrays (NumPy PCG64 streams from ``spec.seed``)."""
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
    y = clean + spec.data.noise_sigma * noise_rng.normal(0.0, 1.0, clean.shape)
    return Dataset(x=x, y=y, teacher=teacher)
