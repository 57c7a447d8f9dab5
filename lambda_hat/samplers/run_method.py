"""One entry point for every cheap method: ``run_trial(problem, method, config, ...)``.

Trial tasks call this with plain values (a method name and a config dict); it validates
the config, runs the method under its budget, turns any failure into a result with
``status="error"`` (a tuning campaign must never die of one bad trial) and writes
``metrics.json`` atomically.

>>> from lambda_hat.problems.specs import ProblemSpec
>>> from lambda_hat.problems.targets import build_problem
>>> spec = ProblemSpec.model_validate({"name": "doc", "model": {"family": "dln",
...     "widths": [2, 2]}, "teacher": {"rank": 2}, "data": {"n": 200}})
>>> result = run_trial(build_problem(spec), "sgld", {"step_size": 1.0}, budget_sec=60)
>>> result.status, result.llc_hat
('diverged', None)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lambda_hat.problems.targets import Problem
from lambda_hat.samplers import mclmc, sgld, vi
from lambda_hat.samplers.common import MethodResult
from lambda_hat.samplers.configs import METHOD_NAMES, config_type_of, parse_method_config

# Each method's runner; its config class is lambda_hat.samplers.configs.METHOD_CONFIGS.
RUNNERS: dict[str, Callable[..., MethodResult]] = {
    "sgld": sgld.run,
    "psgld": sgld.run,
    "mclmc": mclmc.run,
    "vi": vi.run,
}
assert tuple(RUNNERS) == METHOD_NAMES


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
    config_type_of(method)  # an unknown method is the caller's bug: MethodConfigError
    parsed = parse_method_config(method, config)
    started = time.perf_counter()
    try:
        result = RUNNERS[method](
            problem, parsed, seed=seed, budget_sec=budget_sec, progress=progress
        )
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
