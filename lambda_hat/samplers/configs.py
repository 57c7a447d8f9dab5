"""Every sampler's configuration, and the run ids built from them, without JAX.

The driver, the search spaces, the command lines and the report validate configurations
and compute run ids from here; only a run itself imports the sampler modules (which load
JAX, BlackJAX and optax).

>>> config = parse_method_config("sgld", {"step_size": 1e-4})
>>> config.step_size, config.num_chains
(0.0001, 4)
>>> try:
...     parse_method_config("sgld", {"step_size": -1})
... except MethodConfigError as error:
...     print(error)
sgld.step_size: Input should be greater than 0 (got -1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lambda_hat.ids import code_version, run_id
from lambda_hat.problems.specs import format_validation_error

Status = Literal["ok", "diverged", "budget_exhausted", "error"]
Precision = Literal["float32", "float64"]

METHOD_NAMES = ("sgld", "psgld", "mclmc", "vi")
# What a run tunes when not told: pSGLD is offered, not run by default.
DEFAULT_METHODS = ("sgld", "mclmc", "vi")


class SGLDConfig(BaseModel):
    """SGLD hyperparameters. Traced (free to tune): step_size, decay_exponent, decay_t0,
    rmsprop_alpha, rmsprop_delta, num_steps, burn_in_frac, thinning. Static (one compile
    each): batch_size, num_chains, preconditioner, llc_estimator, precision, chunk_draws."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    step_size: float = Field(default=1e-4, gt=0, le=1.0, description="η0")
    step_size_scale: Literal["absolute", "per_nbeta", "per_curvature"] = Field(
        default="absolute",
        description="per_nbeta: η0 = step_size / (nβ), so one value suits every n (recipes); "
        "per_curvature: η0 = step_size / (nβ·h), h the largest Hessian eigenvalue of L_n at w*",
    )
    decay_exponent: float = Field(default=0.0, ge=0, le=1.0, description="p in η0·(1+t/t0)^−p")
    decay_t0: float = Field(default=100.0, gt=0)
    batch_size: int = Field(default=256, ge=1)
    minibatch_heat: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="if set, the batch is the smallest (at most n) whose predicted LLC excess "
        "from minibatch noise, η0·(nβ)²·tr(C)/(8b), is at most this; batch_size is ignored",
    )
    preconditioner: Literal["none", "rmsprop"] = "none"
    rmsprop_alpha: float = Field(default=0.99, gt=0, lt=1)
    rmsprop_delta: float = Field(default=1e-5, gt=0)
    num_steps: int = Field(default=2000, ge=1, le=10_000_000, description="including burn-in")
    burn_in_frac: float = Field(default=0.2, ge=0, lt=1)
    thinning: int = Field(default=1, ge=1, description="steps per kept draw")
    num_chains: int = Field(default=4, ge=1, le=64)
    llc_estimator: Literal["full_batch", "minibatch"] = "full_batch"
    precision: Precision = "float64"
    chunk_draws: int = Field(default=50, ge=1, le=10_000, description="kept draws per chunk")


class PSGLDConfig(SGLDConfig):
    """pSGLD: SGLD with the RMSProp preconditioner. Its step size needs no 1/(nβ) scale:
    the preconditioner 1/(δ + √V) already divides the drift by the gradient's size, which
    grows like nβ."""

    preconditioner: Literal["rmsprop"] = "rmsprop"
    step_size: float = Field(default=1e-3, gt=0, le=1.0, description="η0")

    @model_validator(mode="after")
    def _no_heat_target(self) -> PSGLDConfig:
        # The heat formula assumes Langevin noise η·I; RMSProp rescales both noises by a
        # preconditioner that moves during the run.
        if self.minibatch_heat is not None:
            raise ValueError("minibatch_heat: SGLD only (pSGLD's preconditioner changes the noise)")
        return self


class MCLMCConfig(BaseModel):
    """MCLMC hyperparameters. Traced (free to tune): L, step_size, desired_energy_var,
    trust_in_estimate, num_effective_samples, l_factor, num_steps, thinning. Static (one
    compile each): mode, tune_num_steps, frac_tune1/2/3, diagonal_preconditioning,
    num_chains, precision, chunk_draws."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    mode: Literal["tuned", "fixed"] = "tuned"
    L: float | None = Field(default=None, gt=0, description="fixed mode: decoherence length")
    step_size: float | None = Field(default=None, gt=0, description="fixed mode")
    tune_num_steps: int = Field(default=2000, ge=10, description="BlackJAX's num_steps")
    frac_tune1: float = Field(default=0.1, ge=0, le=1)
    frac_tune2: float = Field(default=0.1, ge=0, le=1)
    frac_tune3: float = Field(default=0.1, ge=0, le=1)
    desired_energy_var: float = Field(default=5e-4, gt=0)
    trust_in_estimate: float = Field(default=1.5, gt=0)
    num_effective_samples: float = Field(default=150.0, gt=1)
    l_factor: float = Field(default=0.4, gt=0)
    diagonal_preconditioning: bool = True
    num_steps: int = Field(default=2000, ge=1, le=10_000_000, description="sampling steps")
    thinning: int = Field(default=1, ge=1)
    num_chains: int = Field(default=4, ge=1, le=64)
    precision: Precision = "float64"
    chunk_draws: int = Field(default=50, ge=1, le=10_000)

    @model_validator(mode="after")
    def _fixed_needs_both(self) -> MCLMCConfig:
        if self.mode == "fixed" and (self.L is None or self.step_size is None):
            raise ValueError("mode 'fixed' needs both L and step_size")
        return self


class VIConfig(BaseModel):
    """VI hyperparameters. Traced (free to tune): learning_rate, init_sigma, num_steps.
    Static (one compile each): family, num_samples, num_eval_samples, num_chains,
    precision, chunk_steps."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    family: Literal["meanfield", "fullrank"] = "meanfield"
    learning_rate: float = Field(default=1e-2, gt=0, le=10.0)
    init_sigma: float = Field(default=1e-2, gt=0, le=10.0, description="initial std of q")
    num_samples: int = Field(default=8, ge=1, le=1024, description="MC samples per ELBO step")
    num_steps: int = Field(default=2000, ge=1, le=10_000_000)
    num_eval_samples: int = Field(default=256, ge=4, le=100_000, description="per fit")
    num_chains: int = Field(default=4, ge=1, le=64, description="independent fits")
    precision: Precision = "float64"
    chunk_steps: int = Field(default=100, ge=1, le=100_000)


class ReferenceConfig(BaseModel):
    """How the reference is sampled. Everything here enters the reference cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    algorithm: Literal["nuts", "hmc"] = "nuts"
    num_chains: int = Field(default=4, ge=4, le=64)
    num_warmup: int = Field(default=1000, ge=20, le=1_000_000)
    num_draws: int = Field(default=2000, ge=4, le=1_000_000, description="kept draws per chain")
    thinning: int = Field(default=1, ge=1)
    chunk_size: int = Field(default=100, ge=1, description="draws per compiled chunk")
    # 0.99, not BlackJAX's usual 0.8: at 0.8 the singular necks produced divergences and a
    # reference biased low against the exact LLC (benchmarks/reference_exact.py).
    target_accept: float = Field(default=0.99, gt=0, lt=1)
    mass_matrix: Literal["diagonal", "dense"] = "diagonal"
    max_num_doublings: int = Field(default=10, ge=1, le=15, description="NUTS tree depth cap")
    num_integration_steps: int = Field(default=16, ge=1, description="HMC leapfrog steps")
    sufficient_statistics: bool = Field(
        default=True,
        description="linear networks: L_n from (1/n)·XᵀX, XᵀY, Σ‖y‖² instead of the n rows "
        "(exact; no effect on MLPs)",
    )
    target_rel_se: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="precision target: after num_draws, keep drawing until se/llc is at "
        "most this (or max_draws, or the budget, ends it); ref.json says which",
    )
    max_draws: int | None = Field(
        default=None, ge=4, le=10_000_000, description="cap per chain with a target (10×num_draws)"
    )
    cross_check: bool = Field(
        default=False,
        description="also estimate the LLC with a second, independent sampler "
        "(Metropolis-adjusted MCLMC, num_draws per chain after 2×num_warmup tuning steps); "
        "the verdict compares the two",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="run the chains as this many separate tasks (num_chains / shards each), "
        "pooled into one reference",
    )
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _shards_divide_chains(self) -> ReferenceConfig:
        if self.num_chains % self.shards:
            raise ValueError(f"shards: must divide num_chains={self.num_chains}, got {self.shards}")
        return self

    @property
    def draw_cap(self) -> int:
        """Kept draws per chain at most: num_draws, or the cap when a target is set."""
        if self.target_rel_se is None:
            return self.num_draws
        return max(self.num_draws, self.max_draws or 10 * self.num_draws)


# The reference the flows and ``python -m lambda_hat reference`` compute (one cache key,
# so either's ref.json serves the other). Measured against the exact finite-n LLC of 72
# small RRRs (benchmarks/reference_exact.py): at target_accept 0.8 and 4 × (300 + 600) the
# reference sat low (mean z −0.50, 89 % of |z| ≤ 2, up to 109 divergences); 0.99 removes
# the divergences on the singular necks, and 2000 draws bring every relative error but one
# within 3 % (mean z −0.24, 99 % of |z| ≤ 2).
DEFAULT_REFERENCE = ReferenceConfig(num_warmup=500, num_draws=2000, target_accept=0.99)


METHOD_CONFIGS: dict[str, type[BaseModel]] = {
    "sgld": SGLDConfig,
    "psgld": PSGLDConfig,
    "mclmc": MCLMCConfig,
    "vi": VIConfig,
}
assert tuple(METHOD_CONFIGS) == METHOD_NAMES


class MethodConfigError(ValueError):
    """An unknown method, or an invalid config for one. One line, naming the field."""


def config_type_of(method: str) -> type[BaseModel]:
    """The config class of ``method`` (one line naming the method if unknown)."""
    if method not in METHOD_CONFIGS:
        allowed = ", ".join(METHOD_CONFIGS)
        raise MethodConfigError(f"method: unknown method {method!r} (allowed: {allowed})")
    return METHOD_CONFIGS[method]


def parse_method_config(method: str, values: Mapping[str, Any] | BaseModel) -> BaseModel:
    """Validate ``values`` as ``method``'s config: unknown keys and out-of-range values
    are refused with ``MethodConfigError("<method>.<field>: <why>")``."""
    config_type = config_type_of(method)
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


# A runner whose results changed at this package version: its runs are recomputed, not
# served from the cache. pSGLD 2: V starts at the expected squared gradient at w*.
_RUNNER_REVISIONS = {"psgld": 2}


def method_code_version(method: str) -> str:
    """Package version + the runner's name (+ its revision): part of every run id."""
    revision = _RUNNER_REVISIONS.get(method)
    return code_version({"runner": method, **({"revision": revision} if revision else {})})


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
