"""Shared fixtures. The JAX compilation cache is on for the whole run (tests reuse kernels)."""

from __future__ import annotations

import pytest

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.problems import ProblemSpec

enable_compilation_cache()


def make_spec(**overrides) -> ProblemSpec:
    """A tiny RRR problem (M=3, H=2, N=3, r=1, n=500) with fields overridden."""
    base = {
        "name": "tiny_rrr",
        "model": {"family": "rrr", "m_in": 3, "hidden": 2, "n_out": 3},
        "teacher": {"rank": 1},
        "data": {"n": 500},
    }
    base.update(overrides)
    return ProblemSpec.model_validate(base)


@pytest.fixture
def tiny_spec() -> ProblemSpec:
    return make_spec()
