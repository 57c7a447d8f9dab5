"""Build a problem: data, trained optimum w*, L0 = L_n(w*), and the closed-form λ if any.

w* is trained once in float64 (Adam, then L-BFGS to polish the gradient to ``grad_tol``)
and saved as ``<cache_dir>/<pid>/target.npz`` + ``meta.json``; later builds reuse it.
Linear networks train, and are checked, on the data's second moments (the same loss at a
cost independent of n: a Hessian at n = 1e6 would otherwise hold d copies of the data).

>>> from lambda_hat.problems.specs import ProblemSpec
>>> spec = ProblemSpec.model_validate({"name": "doc", "model": {"family": "rrr",
...     "m_in": 2, "hidden": 1, "n_out": 2}, "teacher": {"rank": 1}, "data": {"n": 100}})
>>> problem = build_problem(spec)
>>> problem.d, bool(problem.grad_norm < 1e-8)
(4, True)
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat import __version__
from lambda_hat.io import atomic_write_json, atomic_write_npz, read_json
from lambda_hat.problems import custom, theory
from lambda_hat.problems.data import make_dataset
from lambda_hat.problems.gradient_noise import gradient_noise_variance
from lambda_hat.problems.models import activation_of, model_layers, num_params, random_params
from lambda_hat.problems.optimum import (
    check_optimum,
    grad_norm,
    hessian_extremes,
    train_optimum,
)
from lambda_hat.problems.posterior import (
    Arch,
    LossData,
    Moments,
    PosteriorParams,
    empirical_loss,
    inverse_temperature,
    is_linear,
    moments_of,
)
from lambda_hat.problems.specs import ProblemSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """Everything an estimator needs: the posterior's data, constants and w*."""

    spec: ProblemSpec
    pid: str
    arch: Arch
    data: LossData
    w_star: jax.Array
    L0: float
    grad_norm: float
    hessian_min_eig: float | None  # relative to the largest (Lanczos above the dense sizes)
    # h, the largest Hessian eigenvalue of L_n at w*: the posterior's stiffest direction
    # has curvature nβ·h, so 1/(nβ·h) is the step size a Langevin step cannot exceed by much
    # (SGLD's ``step_size_scale: per_curvature``).
    hessian_max_eig: float
    beta: float
    lambda_theory: theory.LearningCoefficient | None

    @property
    def n(self) -> int:
        return self.spec.data.n

    @property
    def d(self) -> int:
        return int(self.w_star.shape[0])

    @property
    def gamma(self) -> float:
        return self.spec.posterior.gamma

    @property
    def n_beta(self) -> float:
        return self.n * self.beta

    @cached_property
    def full_batch_data(self) -> LossData | Moments:
        """What a full-data computation reads: for a linear network the data's second
        moments (the same L_n and gradient, at a cost independent of n), else the rows."""
        return moments_of(self.data) if is_linear(self.arch) else self.data

    @cached_property
    def gradient_noise_variance(self) -> np.ndarray:
        """diag(C) of one data row's loss gradient at w*: where pSGLD's RMSProp second
        moment starts (``lambda_hat.problems.gradient_noise``). Computed on first use."""
        return gradient_noise_variance(self.w_star, self.data, self.arch)

    @property
    def gradient_noise_trace(self) -> float:
        """tr(C): what SGLD's minibatch heat scales with."""
        return float(np.sum(self.gradient_noise_variance))

    def posterior_params(self) -> PosteriorParams:
        return PosteriorParams(self.w_star, jnp.float64(self.n_beta), jnp.float64(self.gamma))


def closed_form(spec: ProblemSpec) -> theory.LearningCoefficient | None:
    """λ for linear families; None for MLPs (no closed form in general)."""
    if spec.model.family == "rrr":
        m = spec.model
        return theory.rrr(m.m_in, m.hidden, m.n_out, spec.teacher.rank)
    if spec.model.family == "dln":
        return theory.dln(spec.widths, spec.teacher.rank)
    return None


def _initial_point(spec: ProblemSpec, teacher: np.ndarray, arch: Arch) -> np.ndarray:
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1]))
    if spec.optimum.init == "random":
        return random_params(rng, arch.layers, 1.0)
    return teacher + spec.optimum.init_jitter * rng.normal(size=teacher.shape)


def _built_in(spec: ProblemSpec) -> tuple[Arch, LossData, np.ndarray, None]:
    dataset = make_dataset(spec)
    arch = Arch(model_layers(spec), activation_of(spec), spec.data.likelihood)
    sigma = spec.data.noise_sigma if spec.data.likelihood == "gaussian" else 1.0  # unread
    data = LossData(jnp.asarray(dataset.x), jnp.asarray(dataset.y), jnp.float64(sigma))
    return arch, data, _initial_point(spec, dataset.teacher, arch), None


def _from_factory(spec: ProblemSpec) -> tuple[Arch, LossData, np.ndarray, np.ndarray | None]:
    """A custom problem: its factory's model, data, start and (if given) trained w*."""
    loaded = custom.load(spec.model)
    arch = Arch((), None, loaded.likelihood, loaded)
    data = LossData(jnp.asarray(loaded.x), jnp.asarray(loaded.y), jnp.float64(loaded.sigma))
    return arch, data, loaded.w0, loaded.w_star


def build_problem(spec: ProblemSpec, cache_dir: Path | None = None) -> Problem:
    """Data, w*, L0 for ``spec``; w* is loaded from ``cache_dir`` when saved there before
    (or given by a custom problem's factory)."""
    pid = spec.pid
    is_custom = isinstance(spec.model, custom.CustomModel)
    arch, data, w0, given = (_from_factory if is_custom else _built_in)(spec)
    fit_data = moments_of(data) if is_linear(arch) else data
    w_star = given if given is not None else _load_target(cache_dir, pid) if cache_dir else None
    trained = w_star is None
    if trained:
        w_star = train_optimum(w0, fit_data, arch, spec.optimum)
    gradient = grad_norm(w_star, fit_data, arch)
    beta = inverse_temperature(spec.data.n, spec.posterior.beta0)
    low, high = hessian_extremes(w_star, fit_data, arch)
    check_optimum(spec, gradient, low, high, spec.data.n * beta)
    L0 = float(empirical_loss(w_star, fit_data, arch))
    assert is_custom or num_params(arch.layers) == w_star.shape[0]
    problem = Problem(
        spec=spec,
        pid=pid,
        arch=arch,
        data=data,
        w_star=jnp.asarray(w_star),
        L0=L0,
        grad_norm=gradient,
        hessian_min_eig=low / max(abs(high), 1e-300),
        hessian_max_eig=high,
        beta=beta,
        lambda_theory=closed_form(spec),
    )
    if cache_dir and trained:
        _save_target(cache_dir, problem)
    return problem


def _target_dir(cache_dir: Path, pid: str) -> Path:
    return Path(cache_dir) / pid


def _load_target(cache_dir: Path, pid: str) -> jax.Array | None:
    folder = _target_dir(cache_dir, pid)
    meta = read_json(folder / "meta.json")
    if not meta or meta.get("pid") != pid:
        return None
    try:
        with np.load(folder / "target.npz", allow_pickle=False) as saved:
            w = np.asarray(saved["w_star"], dtype=np.float64)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        log.warning("target for %s unreadable (%s); retraining", pid, error)
        return None
    return jnp.asarray(w) if w.shape == (meta.get("d"),) else None


def _save_target(cache_dir: Path, problem: Problem) -> None:
    folder = _target_dir(cache_dir, problem.pid)
    atomic_write_npz(folder / "target.npz", w_star=np.asarray(problem.w_star))
    atomic_write_json(
        folder / "meta.json",
        {
            "pid": problem.pid,
            "d": problem.d,
            "L0": problem.L0,
            "grad_norm": problem.grad_norm,
            "lambda_version": __version__,
            "spec": problem.spec.model_dump(mode="json"),
        },
    )
