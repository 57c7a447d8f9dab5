"""Optuna search spaces as data: the defaults ship in ``presets/methods.yaml`` and a user
file overrides them per method.

A method's entry has ``fixed`` (config values every trial uses) and ``space`` (what Optuna
tunes). Both are checked against the method's config model when loaded: names must be
config fields, bounds must be valid values, ``low < high``, ``log`` needs ``low > 0``.

>>> spaces = load_methods()
>>> sorted(spaces)
['mclmc', 'psgld', 'sgld', 'vi']
>>> import optuna
>>> study = optuna.create_study()
>>> trial = study.ask(spaces["sgld"].distributions())
>>> config = spaces["sgld"].config(trial.params)
>>> 1e-6 <= config.step_size <= 1e-2 and config.num_steps == 3000
True
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lambda_hat.io import read_text, safe_load_yaml
from lambda_hat.problems.specs import format_validation_error
from lambda_hat.samplers.configs import METHOD_CONFIGS, parse_method_config

if TYPE_CHECKING:  # (loaded when a study asks: checking a methods file needs no Optuna)
    import optuna


class SearchSpaceError(ValueError):
    """An invalid methods / search-space file. One line naming the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class FloatParam(_Frozen):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log)
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna import distributions

        return distributions.FloatDistribution(self.low, self.high, log=self.log)


class IntParam(_Frozen):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log)
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna import distributions

        return distributions.IntDistribution(self.low, self.high, log=self.log)


class CategoricalParam(_Frozen):
    type: Literal["categorical"]
    choices: tuple[bool | int | float | str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> CategoricalParam:
        # One type: the method config would quietly coerce "64" or true to a number, and
        # the results table cannot hold a column of mixed types.
        kinds = sorted({type(choice).__name__ for choice in self.choices})
        if len(kinds) > 1:
            raise ValueError(f"choices must all be of one type, got {', '.join(kinds)}")
        if any(isinstance(c, float) and not math.isfinite(c) for c in self.choices):
            raise ValueError("choices must be finite numbers")
        if len(set(self.choices)) != len(self.choices):
            raise ValueError(f"choices must be distinct, got {list(self.choices)}")
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        from optuna import distributions

        return distributions.CategoricalDistribution(self.choices)


def _check_bounds(low: float, high: float, log: bool) -> None:
    if not low < high:
        raise ValueError(f"low must be below high (got low={low}, high={high}); use fixed")
    if log and low <= 0:
        raise ValueError(f"log scale needs low > 0 (got low={low})")


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class MethodSpace(_Frozen):
    """One method's fixed settings and tuned parameters."""

    method: str
    fixed: dict[str, Any] = {}
    space: dict[str, Param] = {}

    @model_validator(mode="after")
    def _matches_config(self) -> MethodSpace:
        if self.method not in METHOD_CONFIGS:
            raise ValueError(
                f"unknown method {self.method!r} (allowed: {', '.join(METHOD_CONFIGS)})"
            )
        both = sorted(set(self.fixed) & set(self.space))
        if both:
            raise ValueError(f"{both} both fixed and tuned")
        for probe in self._extremes():
            # A MethodConfigError is a ValueError: pydantic reports it as this model's error.
            parse_method_config(self.method, probe)
        return self

    def _extremes(self) -> list[dict[str, Any]]:
        """Configs at every bound and choice: if these validate, every suggestion does."""
        probes = [dict(self.fixed)]
        for name, param in self.space.items():
            values = (
                param.choices if isinstance(param, CategoricalParam) else (param.low, param.high)
            )
            probes += [{**self.fixed, name: value} for value in values]
        return probes

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """For ``study.ask(fixed_distributions=...)``."""
        return {name: param.distribution() for name, param in self.space.items()}

    def config(self, params: dict[str, Any]) -> BaseModel:
        """The method config of one trial: fixed values plus the suggested ones."""
        return parse_method_config(self.method, {**self.fixed, **params})


def _parse_entry(method: str, entry: Any, source: str) -> MethodSpace:
    if not isinstance(entry, dict):
        raise SearchSpaceError(f"{source}: methods.{method}: expected a mapping")
    try:
        return MethodSpace.model_validate({"method": method, **entry})
    except ValidationError as error:
        separator = "." if error.errors()[0]["loc"] else ": "
        line = format_validation_error(error)
        raise SearchSpaceError(f"{source}: methods.{method}{separator}{line}") from None


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    data = safe_load_yaml(text, source, SearchSpaceError)
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        raise SearchSpaceError(f"{source}: expected a mapping with 'methods:'")
    return data["methods"]


def load_methods(path: str | Path | None = None) -> dict[str, MethodSpace]:
    """The default methods, with each method given in ``path`` overriding its ``fixed``
    and/or ``space`` (a method not in the defaults is an error)."""
    defaults_text = resources.files("lambda_hat.presets").joinpath("methods.yaml").read_text()
    entries = _read_yaml(defaults_text, "preset methods")
    source = "preset methods"
    if path is not None:
        path = Path(path)
        if path.is_dir():
            raise SearchSpaceError(f"methods: {str(path)!r} is a directory; give a YAML file")
        if not path.is_file():
            raise SearchSpaceError(f"methods: no such file {str(path)!r}")
        source = str(path)
        text = read_text(path, "methods", SearchSpaceError)
        for method, entry in _read_yaml(text, source).items():
            if method not in entries:
                allowed = ", ".join(sorted(entries))
                raise SearchSpaceError(
                    f"{source}: methods.{method}: unknown method (allowed: {allowed})"
                )
            if not isinstance(entry, dict):
                raise SearchSpaceError(f"{source}: methods.{method}: expected a mapping")
            entries[method] = {**entries[method], **entry}
    return {method: _parse_entry(method, entry, source) for method, entry in entries.items()}


# SGLD's step size in a recipe study, in units of 1/(nβ): ε·nβ from 1e-4 to 1 covers about
# the absolute 1e-6 … 1e-2 of a per-problem study at n = 500 … 2000 (nβ = 80 … 263; the
# config allows at most 1).
RECIPE_STEP_RANGE = (1.0e-4, 1.0)


def recipe_space(space: MethodSpace) -> MethodSpace:
    """The space a recipe study tunes: SGLD's step size in units of 1/(nβ) unless the
    methods file fixes ``step_size_scale`` itself.

    >>> from lambda_hat.tuning.search_space import load_methods
    >>> space = recipe_space(load_methods()["sgld"])
    >>> space.fixed["step_size_scale"], space.space["step_size"].low
    ('per_nbeta', 0.0001)
    """
    tuned = space.space.get("step_size")
    if space.method != "sgld" or "step_size_scale" in space.fixed or tuned is None:
        return space
    low, high = RECIPE_STEP_RANGE
    return MethodSpace(
        method=space.method,
        fixed={**space.fixed, "step_size_scale": "per_nbeta"},
        space={**space.space, "step_size": FloatParam(type="float", low=low, high=high, log=True)},
    )
