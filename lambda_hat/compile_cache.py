"""JAX's persistent compilation cache, so a new process reuses earlier compiles."""

from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compilation_cache(directory: str | Path | None = None) -> Path:
    """Turn the cache on at ``directory`` (default ``$LAMBDA_HAT_JAX_CACHE`` or ``.jax_cache``)."""
    path = Path(directory or os.environ.get("LAMBDA_HAT_JAX_CACHE", ".jax_cache")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Cache even quick compiles: a study compiles the same few kernels in every worker.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    return path
