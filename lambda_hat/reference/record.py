"""The one writer and the one reader of a reference's files.

``<artifacts>/problems/<pid>/`` holds ``spec.yaml`` (the problem), ``ref.json`` (the
``ReferenceResult`` fields plus the problem's ``name``, and where and when it was computed)
and ``convergence.json`` (running means and traces, for the report). The flows, the tasks
and ``python -m lambda_hat reference`` all write through ``write_reference`` and read
through ``read_reference`` / ``current_reference``, so a reference computed by any of them
is the same file and is accepted by the others.

A reference is *current* when its ``code_version`` matches the reference cache key of the
sampling settings asked for: package version, the settings, and the JAX, jaxlib and
BlackJAX versions (``reference_code_version``). Nothing here imports JAX.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> read_reference(folder, "p_missing") is None
True
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from lambda_hat.ids import code_version, validate_id
from lambda_hat.io import atomic_write_bytes, atomic_write_json, read_json
from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.reference.quality import rejudge
from lambda_hat.samplers.configs import ReferenceConfig

log = logging.getLogger(__name__)


class ReferenceResult(BaseModel):
    """What a reference run returns; ``ref.json`` holds these fields plus ``name`` and where
    it ran (docs/architecture.md, "Contracts")."""

    model_config = ConfigDict(frozen=True)

    pid: str
    llc_ref: float
    se_ref: float
    ess: float
    rhat: float
    n_draws: int
    n_chains: int
    divergences: int
    acceptance: float
    grad_evals: int
    runtime_sec: float
    L0: float
    n: int
    beta: float
    gamma: float
    d: int
    w_star_grad_norm: float
    w_star_hessian_min_eig: float | None
    # h, the largest Hessian eigenvalue of L_n at w* (None in references from before it):
    # SGLD's per-curvature step sizes are in units of 1/(nβ·h).
    w_star_hessian_max_eig: float | None = None
    budget_exhausted: bool
    # The precision target (se/llc) if one was set, and whether sampling met it (False:
    # the draw cap or the budget ended it first).
    precision_target: float | None = None
    precision_met: bool | None = None
    # The second sampler's estimate when ``cross_check`` was on (None: off, or skipped):
    # algorithm, llc, se, rhat, ess, acceptance, grad_evals, runtime_sec.
    cross_check: dict[str, Any] | None = None
    code_version: str
    lambda_theory: float | None = None
    lambda_multiplicity: int | None = None
    algorithm: str
    step_size_mean: float
    # The run's own timing: a budgeted run ends about one slowest chunk past its budget at
    # most, plus finishing (estimate, ESS, R-hat) after sampling.
    slowest_chunk_sec: float | None = None
    finish_sec: float | None = None
    decision_margin_sec: float | None = None  # budgeted runs: ≥ 0, by the run's own clock
    # lambda_hat.reference.quality: trusted | warn | untrusted, and why.
    quality: Literal["trusted", "warn", "untrusted"] = "trusted"
    quality_reasons: list[str] = Field(default_factory=list)
    # What the verdict is re-derived from when the record is read (with rhat, ess,
    # divergences, budget_exhausted): sampling transitions, and (mean, se) of each half.
    transitions: int
    halves: tuple[float, float, float, float] | None = None
    # Running mean ± SE against gradient evaluations and the chains' traces: written to
    # convergence.json beside ref.json, not into ref.json itself.
    convergence: dict[str, Any] | None = Field(default=None, exclude=True)


def library_versions() -> dict[str, str]:
    """The numerical libraries a reference's numbers depend on."""
    from importlib.metadata import version

    return {name: version(name) for name in ("jax", "jaxlib", "blackjax")}


# Settings added after the first references: in the key only when set away from these.
_ADDED_LATER = {"target_rel_se": None, "max_draws": None, "cross_check": False, "shards": 1}


def reference_code_version(config: ReferenceConfig) -> str:
    """Package version + hash of the sampling config and of the JAX, jaxlib and BlackJAX
    versions: part of the reference cache key, so a reference is recomputed when any of
    them changes (and only then: the nightly refresh computes what is missing or stale)."""
    # "evidence": references from before the quality verdict and the convergence data (1),
    # and the checksum and the diagnostics the verdict is re-derived from (2), are
    # recomputed rather than served from the cache without them.
    return code_version(
        {
            "runner": "hmc_reference",
            "evidence": 2,
            "libraries": library_versions(),
            # Settings added later enter only when set, so older references keep their key.
            **config.model_dump(mode="json", exclude=set(_ADDED_LATER)),
            **{key: value for key, value in config.model_dump(mode="json").items()
               if key in _ADDED_LATER and value != _ADDED_LATER[key]},
        }
    )  # fmt: skip


def reference_dir(artifacts_dir: Path, pid: str) -> Path:
    return Path(artifacts_dir) / "problems" / validate_id(pid)


def checksum(record: dict[str, Any]) -> str:
    """SHA-256 of the record's content (every field but ``checksum``, canonical JSON)."""
    content = {key: value for key, value in record.items() if key != "checksum"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def save_record(artifacts_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``ref.json`` atomically with its ``checksum`` (a whole record: pooled
    extensions go through here too)."""
    path = reference_dir(artifacts_dir, record["pid"]) / "ref.json"
    atomic_write_json(path, {**record, "checksum": checksum(record)})
    return path


def write_reference(
    artifacts_dir: Path, spec: ProblemSpec, result: ReferenceResult, **extra: Any
) -> dict[str, Any]:
    """Save a computed reference: ``spec.yaml``, ``convergence.json`` and, last,
    ``ref.json`` (``result``'s fields, the problem's ``name`` and ``extra``). Returns the
    record as written."""
    folder = reference_dir(artifacts_dir, result.pid)
    atomic_write_bytes(folder / "spec.yaml", yaml.safe_dump(spec.model_dump(mode="json")).encode())
    if result.convergence is not None:  # the report plots it; small (≤ 400 points a chain)
        atomic_write_json(folder / "convergence.json", result.convergence)
    record = {**result.model_dump(mode="json"), "name": spec.name, **extra}
    save_record(artifacts_dir, record)
    return record


def read_reference(artifacts_dir: Path, pid: str) -> dict[str, Any] | None:
    """The problem's ``ref.json`` when it is whole: readable, this pid, an ``llc_ref``, a
    ``name``, and content that matches its ``checksum``. Else None (missing, truncated,
    edited on disk: a warning says which). The quality verdict is re-derived from the
    stored diagnostics (``lambda_hat.reference.quality.rejudge``), never taken on trust."""
    path = reference_dir(artifacts_dir, pid) / "ref.json"
    record = read_json(path)
    whole = (
        isinstance(record, dict)
        and record.get("pid") == pid
        and "llc_ref" in record
        and "name" in record
    )
    if not whole:
        return None
    if record.get("checksum") != checksum(record):
        what = "has no checksum" if "checksum" not in record else "does not match its checksum"
        log.warning("%s %s (edited on disk, or written by an older version): not used", path, what)
        return None
    try:
        quality, reasons = rejudge(record)
    except (KeyError, TypeError, ValueError):
        log.warning("%s lacks the diagnostics its verdict is re-derived from: not used", path)
        return None
    return {**record, "quality": quality, "quality_reasons": reasons}


def current_reference(
    artifacts_dir: Path, spec: ProblemSpec | dict[str, Any], config: ReferenceConfig
) -> dict[str, Any] | None:
    """The problem's reference when it is whole and current for ``config`` (same cache
    key); else None."""
    pid = ProblemSpec.model_validate(spec).pid if isinstance(spec, dict) else spec.pid
    record = read_reference(artifacts_dir, pid)
    if record is None or record.get("code_version") != reference_code_version(config):
        return None
    return record
