"""Stable identifiers: canonical JSON → blake2b.

Equal specs written differently (key order, ``1`` vs ``1.0``) hash the same; any real
change hashes differently.

>>> canonical_json({"b": 1, "a": [1.0, 2]})
'{"a":[1,2],"b":1}'
>>> stable_hash({"x": 1}) == stable_hash({"x": 1.0})
True
>>> validate_id("p_0123abcd")
'p_0123abcd'
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from lambda_hat import __version__

_ID_PATTERN = re.compile(r"^[a-z0-9_]+$")


def _normalize(value: Any) -> Any:
    """Make a JSON-able value canonical: integral floats become ints, tuples lists."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot hash a non-finite float: {value}")
        # 1.0 and 1 are the same number; repr() round-trips every other float exactly.
        return int(value) if value.is_integer() else float(repr(value))
    if isinstance(value, dict):
        return {str(k): _normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize(v) for v in value]
    if hasattr(value, "item"):  # numpy / jax scalars
        return _normalize(value.item())
    raise TypeError(f"cannot hash a value of type {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, normalized numbers."""
    return json.dumps(_normalize(value), sort_keys=True, separators=(",", ":"))


def stable_hash(value: Any, length: int = 12) -> str:
    """blake2b hex digest of the canonical JSON of ``value``, truncated to ``length``."""
    digest = hashlib.blake2b(canonical_json(value).encode(), digest_size=16).hexdigest()
    return digest[:length]


def validate_id(identifier: str) -> str:
    """Return ``identifier`` if it is safe to use as a path component, else raise."""
    if not _ID_PATTERN.match(identifier):
        raise ValueError(f"invalid id {identifier!r}: allowed characters are [a-z0-9_]")
    return identifier


def code_version(estimator_config: Any = None) -> str:
    """Package version plus a hash of the estimator configuration."""
    return f"{__version__}+{stable_hash(estimator_config, 8)}"


def problem_id(normalized_spec: dict[str, Any]) -> str:
    """``p_`` + hash of a normalized problem spec (see ``ProblemSpec.pid``)."""
    return validate_id("p_" + stable_hash(normalized_spec))


def run_id(
    pid: str, method: str, hyperparams: dict[str, Any], seed: int, budget: Any, version: str
) -> str:
    """``r_`` + hash of everything that determines a run's result."""
    payload = {
        "pid": pid,
        "method": method,
        "hyperparams": hyperparams,
        "seed": seed,
        "budget": budget,
        "code_version": version,
    }
    return validate_id("r_" + stable_hash(payload))
