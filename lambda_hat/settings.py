"""One settings object for the whole product (pydantic-settings).

Read from the environment (prefix ``LAMBDA_HAT_``, nested fields with ``__``) and from a
``.env`` file in the working directory. Secrets are ``SecretStr``: printing the settings,
logging them or putting them in an artifact shows ``**********``.

>>> import os
>>> os.environ["LAMBDA_HAT_BUDGETS__TRIAL_SEC"] = "30"
>>> settings = Settings(optuna_storage="postgresql+psycopg://lh:hunter2@db/lh")
>>> settings.budgets.trial_sec
30.0
>>> "hunter2" in repr(settings) or "hunter2" in str(settings.public())
False
>>> del os.environ["LAMBDA_HAT_BUDGETS__TRIAL_SEC"]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClusterSettings(BaseModel):
    """Where trial and reference tasks run.

    ``local``: a Dask LocalCluster; ``slurm`` / ``pbs``: dask-jobqueue clusters; each built
    from a profile (``deployments/profiles/<kind>.yaml`` unless ``profile`` names another
    file). ``address``: an existing Dask scheduler (``scheduler_address``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "address", "slurm", "pbs"] = "local"
    scheduler_address: str | None = None
    profile: str | None = Field(default=None, description="a profile YAML file")

    @field_validator("scheduler_address")
    @classmethod
    def _looks_like_an_address(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"expected e.g. tcp://host:8786, got {value!r}")
        return value


DAY_SEC = 86400.0


class BudgetSettings(BaseModel):
    """Seconds, finite and at most a week (30 days for a reference): a larger value is a
    typo, and an infinite one overflows the first wait."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    trial_sec: float = Field(
        default=120.0, gt=0, le=7 * DAY_SEC, description="wall-clock budget per trial"
    )
    reference_sec: float | None = Field(
        default=None, gt=0, le=30 * DAY_SEC, description="per HMC reference"
    )
    stall_sec: float = Field(
        default=900.0,
        gt=0,
        le=7 * DAY_SEC,
        description="fail a study when no trial finished for this long (paused or lost workers)",
    )
    lease_sec: float = Field(
        default=300.0,
        ge=10,
        le=DAY_SEC,
        description="a RUNNING trial on another host is stale once its driver's heartbeat "
        "is this old (a dead driver on the same host is recognised at once)",
    )
    storage_retry_sec: float = Field(
        default=120.0,
        gt=0,
        le=DAY_SEC,
        description="retry a lost Optuna storage connection (a database restart) this long",
    )


class TuningSettings(BaseModel):
    """Defaults of ``python flows/tune.py``'s repeat, pruning and validation options (an
    option given on the command line wins)."""

    model_config = ConfigDict(extra="forbid")

    repeats: int = Field(default=3, ge=1, le=100, description="runs per trial")
    pruner: Literal["wilcoxon", "median", "none"] = "wilcoxon"
    # What proposes configurations (lambda_hat.tuning.search_samplers).
    sampler: Literal["tpe", "qmc-tpe", "random"] = "tpe"
    validate_top_k: int = Field(default=3, ge=0, le=100, description="0: no validation")
    validation_seeds: int = Field(default=8, ge=2, le=1000, description="fresh seeds each")


class JaxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compilation_cache_dir: Path | None = Field(
        default=None, description="persistent compile cache (default: <results_dir>/jax_cache)"
    )


class Settings(BaseSettings):
    """Everything configurable without editing code."""

    model_config = SettingsConfigDict(
        env_prefix="LAMBDA_HAT_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
    )

    results_dir: Path = Path("results")
    artifacts_dir: Path = Path("artifacts")
    optuna_storage: SecretStr | None = Field(
        default=None, description="an SQLAlchemy URL; default sqlite:///<results_dir>/optuna.db"
    )
    cluster: ClusterSettings = ClusterSettings()
    budgets: BudgetSettings = BudgetSettings()
    tuning: TuningSettings = TuningSettings()
    jax: JaxSettings = JaxSettings()
    memory_limit_gb: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="refuse problems estimated to need more (default: 80 % of this "
        "machine's physical memory)",
    )

    def storage_url(self) -> str:
        """The Optuna storage URL, secret included: pass it to Optuna, never print it."""
        if self.optuna_storage is not None:
            return self.optuna_storage.get_secret_value()
        return f"sqlite:///{(self.results_dir / 'optuna.db').resolve()}"

    def memory_limit_bytes(self) -> int:
        from lambda_hat.problems.sizes import default_limit_bytes

        if self.memory_limit_gb is None:
            return default_limit_bytes()
        return int(self.memory_limit_gb * 2**30)

    def jax_cache_dir(self) -> Path:
        return (self.jax.compilation_cache_dir or self.results_dir / "jax_cache").resolve()

    def public(self) -> dict[str, Any]:
        """The settings with secrets masked, for logs and artifacts."""
        values = self.model_dump(mode="json")
        if self.optuna_storage is not None:
            values["optuna_storage"] = mask_url(self.optuna_storage.get_secret_value())
        return values


def mask_url(url: str) -> str:
    """``driver://user:secret@host/db`` → ``driver://user:***@host/db``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
