"""Your own model, data and loss: a problem built by a Python factory.

A problem spec names a factory instead of a built-in family::

    model: {family: custom, factory: "my_package.my_module:make_problem", args: {width: 8}}
    data: {n: 1800}          # checked against the rows the factory returns

``make_problem(**args)`` returns a ``CustomProblem``: the model's ``apply(params, x)``,
the initial parameters (any pytree of float arrays: a Flax or Equinox model's parameters
as they are), the data, the likelihood and, optionally, a trained ``w_star`` (same pytree).
Without one, lambda_hat trains w* from ``params`` with the spec's ``optimum`` settings;
either way w* must pass the same checks as a built-in problem's.

The factory is loaded once per process (``load``): imported, called and checked, so a bad
factory fails in one line naming it before anything runs. This module does not import JAX;
``load`` does, because the factory's parameters are flattened with ``ravel_pytree``.

>>> model = CustomModel(family="custom", factory="examples.my_model:make_problem")
>>> model.layer_widths
()
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lambda_hat.ids import canonical_json


class FactoryError(ValueError):
    """A custom problem's factory cannot be used; the message is one line naming it."""


class CustomModel(BaseModel):
    """``factory`` ("package.module:function") called with ``args`` (JSON values)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Literal["custom"]
    factory: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$")
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("args")
    @classmethod
    def _json_args(cls, args: dict[str, Any]) -> dict[str, Any]:
        try:  # they enter the pid and travel to workers as JSON
            canonical_json(args)
        except (TypeError, ValueError) as error:
            raise ValueError(f"must be finite JSON values ({error})") from None
        return args

    @property
    def layer_widths(self) -> tuple[int, ...]:
        return ()  # the factory's model has no layer list


@dataclass(frozen=True)
class CustomProblem:
    """What a factory returns.

    ``apply(params, x)`` maps a batch of inputs (leading axis n) to outputs (n, k): values
    for ``likelihood="gaussian"`` (std ``sigma``), logits for ``"categorical"``. ``y`` is
    (n, k) or (n,) targets, or (n,) integer labels in [0, k) for a categorical likelihood.
    """

    apply: Callable[[Any, Any], Any]
    params: Any
    x: Any
    y: Any
    likelihood: Literal["gaussian", "categorical"] = "gaussian"
    sigma: float = 1.0
    w_star: Any = None


@dataclass(frozen=True, eq=False)  # hashed by identity: a jit-static part of ``Arch``
class LoadedFactory:
    """A checked factory result, flattened: what ``build_problem`` reads."""

    apply: Callable[[Any, Any], Any]
    unravel: Callable[[Any], Any]
    x: np.ndarray
    y: np.ndarray  # (n, k) float64: targets, or one-hot labels
    w0: np.ndarray
    w_star: np.ndarray | None
    likelihood: str
    sigma: float
    fingerprint: str

    def __call__(self, w, x):
        return self.apply(self.unravel(w), x)


def load(model: CustomModel) -> LoadedFactory:
    """Import, call and check ``model.factory`` (once per process and arguments)."""
    return _load(model.factory, canonical_json(model.args))


@lru_cache(maxsize=32)
def _load(factory: str, args_json: str) -> LoadedFactory:
    name = f"model.factory {factory!r}"
    module_name, function_name = factory.split(":")
    # Like ``python -m``: a factory beside the working directory is found without
    # installing it (``python flows/tune.py`` puts flows/, not the working directory, on
    # the path). Appended, so it never shadows an installed module.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 — any import failure is the user's to see
        raise FactoryError(f"{name}: cannot import {module_name} ({_one_line(error)})") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise FactoryError(f"{name}: {module_name} has no function {function_name}")
    try:
        result = function(**json.loads(args_json))
    except Exception as error:  # noqa: BLE001
        raise FactoryError(f"{name}: raised {_one_line(error)}") from None
    if not isinstance(result, CustomProblem):
        raise FactoryError(
            f"{name}: returned {type(result).__name__}, expected "
            "lambda_hat.problems.custom.CustomProblem"
        )
    return _check(result, name, _source_digest(module_name) + args_json)


def _check(problem: CustomProblem, name: str, identity: str) -> LoadedFactory:
    from jax.flatten_util import ravel_pytree

    if problem.likelihood not in ("gaussian", "categorical"):
        raise FactoryError(f"{name}: likelihood must be 'gaussian' or 'categorical'")
    sigma = float(problem.sigma)
    if not (np.isfinite(sigma) and sigma > 0):
        raise FactoryError(f"{name}: sigma must be a finite number > 0, got {problem.sigma}")
    x = _finite_array(problem.x, f"{name}: x")
    # float64 leaves: ravel_pytree's unravel casts back to each leaf's dtype, and a float32
    # model (Flax's default) would otherwise be sampled in float32.
    w0, unravel = ravel_pytree(_float64(problem.params, f"{name}: params"))
    w0 = _finite_array(w0, f"{name}: params")
    if w0.size == 0:
        raise FactoryError(f"{name}: params has no parameters")
    w_star = None
    if problem.w_star is not None:
        flat, _ = ravel_pytree(_float64(problem.w_star, f"{name}: w_star"))
        w_star = _finite_array(flat, f"{name}: w_star")
        if w_star.shape != w0.shape:
            raise FactoryError(f"{name}: w_star has {w_star.size} parameters, params {w0.size}")
    try:
        probe = np.asarray(problem.apply(unravel(w0), x[:2]), dtype=np.float64)
    except Exception as error:  # noqa: BLE001
        raise FactoryError(f"{name}: apply(params, x) raised {_one_line(error)}") from None
    if probe.ndim != 2 or probe.shape[0] != min(2, len(x)):
        raise FactoryError(f"{name}: apply(params, x[:2]) must be (2, k), got {probe.shape}")
    y = _targets(problem, len(x), probe.shape[1], name)
    digest = hashlib.blake2b(identity.encode(), digest_size=16)
    for array in (x, y, w0, w_star if w_star is not None else np.zeros(0)):
        digest.update(str(array.shape).encode() + np.ascontiguousarray(array).tobytes())
    return LoadedFactory(
        apply=problem.apply, unravel=unravel, x=x, y=y, w0=w0, w_star=w_star,
        likelihood=problem.likelihood, sigma=sigma, fingerprint=digest.hexdigest()[:16],
    )  # fmt: skip


def _targets(problem: CustomProblem, n: int, outputs: int, name: str) -> np.ndarray:
    """y as (n, k) float64: one-hot for labels, a column for (n,) Gaussian targets."""
    y = np.asarray(problem.y)
    if y.shape[:1] != (n,):
        raise FactoryError(f"{name}: y has {y.shape[:1] or 'no'} rows, x has {n}")
    if problem.likelihood == "categorical" and y.ndim == 1:
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= outputs:
            raise FactoryError(f"{name}: labels must be integers in [0, {outputs})")
        return np.eye(outputs)[y]
    y = _finite_array(y.reshape(n, -1), f"{name}: y")
    if y.shape[1] != outputs:
        raise FactoryError(f"{name}: y has {y.shape[1]} columns, apply gives {outputs} outputs")
    if problem.likelihood == "categorical" and not np.allclose(y.sum(axis=1), 1.0):
        raise FactoryError(f"{name}: categorical y must be labels or one-hot rows")
    return y


def _float64(tree: Any, name: str) -> Any:
    import jax

    return jax.tree.map(lambda leaf: _finite_array(leaf, name), tree)


def _finite_array(value: Any, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise FactoryError(f"{name}: not a numeric array") from None
    if not np.all(np.isfinite(array)):
        raise FactoryError(f"{name}: contains non-finite values (NaN or inf)")
    return array


def _source_digest(module_name: str) -> str:
    """The module file's bytes: an edited factory is another problem."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None or not spec.has_location:
        return module_name
    with open(spec.origin, "rb") as handle:
        return hashlib.blake2b(handle.read(), digest_size=16).hexdigest()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:300]
