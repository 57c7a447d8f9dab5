"""One entry point for every cheap method: ``run_trial(problem, method, config, ...)``.

Trial tasks call this with plain values (a method name and a config dict); it validates
the config, runs the method under its budget, turns any failure into a result with
``status="error"`` (a tuning campaign must never die of one bad trial) and writes
``metrics.json`` atomically.

>>> from lambda_hat.problems import ProblemSpec
>>> from lambda_hat.targets import build_problem
>>> spec = ProblemSpec.model_validate({"name": "doc", "model": {"family": "dln",
...     "widths": [2, 2]}, "teacher": {"rank": 2}, "data": {"n": 200}})
>>> result = run_trial(build_problem(spec), "sgld", {"step_size": 1.0}, budget_sec=60)
>>> result.status, result.llc_hat
('diverged', None)
>>> try:
...     parse_method_config("sgld", {"step_size": -1})
... except MethodConfigError as error:
...     print(error)
sgld.step_size: Input should be greater than 0 (got -1)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from lambda_hat.ids import code_version, run_id
from lambda_hat.problems import format_validation_error
from lambda_hat.runners import mclmc, sgld, vi
from lambda_hat.runners.common import MethodResult
from lambda_hat.runners.names import METHOD_NAMES
from lambda_hat.targets import Problem


class Method(NamedTuple):
    config: type[BaseModel]
    run: Callable[..., MethodResult]


METHODS: dict[str, Method] = {
    "sgld": Method(sgld.SGLDConfig, sgld.run),
    "psgld": Method(sgld.PSGLDConfig, sgld.run),
    "mclmc": Method(mclmc.MCLMCConfig, mclmc.run),
    "vi": Method(vi.VIConfig, vi.run),
}
assert tuple(METHODS) == METHOD_NAMES  # (the names the command line offers without JAX)


class MethodConfigError(ValueError):
    """An unknown method, or an invalid config for one. One line, naming the field."""


def method_of(name: str) -> Method:
    if name not in METHODS:
        raise MethodConfigError(f"method: unknown method {name!r} (allowed: {', '.join(METHODS)})")
    return METHODS[name]


def parse_method_config(method: str, values: Mapping[str, Any] | BaseModel) -> BaseModel:
    """Validate ``values`` as ``method``'s config: unknown keys and out-of-range values
    are refused with ``MethodConfigError("<method>.<field>: <why>")``."""
    config_type = method_of(method).config
    if isinstance(values, config_type):
        return values
    if isinstance(values, BaseModel):
        values = values.model_dump()
    try:
        return config_type.model_validate(dict(values))
    except ValidationError as error:
        first = error.errors()[0]
        line = format_validation_error(error)
        if first["type"] not in ("literal_error", "extra_forbidden") and "input" in first:
            line = f"{line} (got {first['input']!r})" if first["loc"] else line
        raise MethodConfigError(f"{method}.{line}") from None


def method_code_version(method: str) -> str:
    """Package version + the runner's name: part of every run id."""
    return code_version({"runner": method})


def run_id_for(
    problem_pid: str, method: str, config: BaseModel, seed: int, budget_sec: float | None
) -> str:
    """The run's ID: equal (pid, method, full config, seed, budget, code) → equal ID."""
    return run_id(
        problem_pid,
        method,
        config.model_dump(mode="json"),
        seed,
        budget_sec,
        method_code_version(method),
    )


def run_trial(
    problem: Problem,
    method: str,
    config: Mapping[str, Any] | BaseModel,
    *,
    budget_sec: float | None,
    seed: int = 0,
    out_dir: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MethodResult:
    """Run ``method`` on ``problem``. Invalid configs raise ``MethodConfigError`` (that
    is the caller's bug); anything that goes wrong while running becomes ``status="error"``."""
    chosen = method_of(method)
    parsed = parse_method_config(method, config)
    started = time.perf_counter()
    try:
        result = chosen.run(problem, parsed, seed=seed, budget_sec=budget_sec, progress=progress)
    except Exception as error:  # noqa: BLE001 - one bad trial must not end a campaign
        message = f"{type(error).__name__}: {error}".splitlines()[0]
        result = MethodResult(
            method=method,
            llc_hat=None,
            se_hat=None,
            runtime_sec=time.perf_counter() - started,
            grad_evals=0,
            full_grad_equiv=0.0,
            n_draws=0,
            n_chains=0,
            status="error",
            error=message,
            seed=seed,
        )
    if out_dir is not None:
        result.write(out_dir)
    return result
