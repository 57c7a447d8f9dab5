"""LLC = nβ·(E_π[L_n] − L_n(w*)) from loss traces, with ESS-based SE and R-hat.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> losses = 1.0 + rng.normal(0.0, 0.01, size=(4, 500)) ** 2
>>> est = llc_from_losses(losses, L0=1.0, n_beta=100.0)
>>> round(est.llc, 2), est.rhat < 1.05
(0.01, True)
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import numpy as np
from blackjax.diagnostics import effective_sample_size, potential_scale_reduction


class LLCEstimate(NamedTuple):
    llc: float
    se: float
    ess: float
    rhat: float
    n_draws: int  # kept draws over all chains


def _ess_and_rhat(draws: jax.Array) -> tuple[jax.Array, jax.Array]:
    return (
        effective_sample_size(draws, chain_axis=0, sample_axis=1),
        potential_scale_reduction(draws, chain_axis=0, sample_axis=1),
    )


@lru_cache(maxsize=256)
def compiled_diagnostics(shape: tuple[int, int]):
    """ESS and R-hat compiled for one (chains, draws) shape.

    One compiled graph costs ~0.5 s per new shape (eager dispatch of BlackJAX's many small
    ops ~1.5 s). Budgeted runners call this for the next trace shape while a chunk runs,
    so finishing a run never waits for a compile.
    """
    spec = jax.ShapeDtypeStruct(shape, np.float64)
    return jax.jit(_ess_and_rhat).lower(spec).compile()


def llc_from_losses(losses: np.ndarray, L0: float, n_beta: float) -> LLCEstimate:
    """``losses`` is (chains, draws) of L_n at the kept draws.

    SE is the posterior std of nβ·L_n divided by √ESS (ESS over all chains); with fewer
    than 4 draws per chain ESS and R-hat are undefined and reported as NaN.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2 or losses.size == 0:
        raise ValueError(f"losses must be a non-empty (chains, draws) array, got {losses.shape}")
    llc_draws = n_beta * (losses - L0)
    llc = float(llc_draws.mean())
    if losses.shape[1] < 4:
        return LLCEstimate(llc, float("nan"), float("nan"), float("nan"), int(losses.size))
    ess, rhat = (float(v) for v in compiled_diagnostics(losses.shape)(llc_draws))
    if losses.shape[0] == 1:
        rhat = float("nan")
    se = float(llc_draws.std(ddof=1) / np.sqrt(max(ess, 1.0)))
    return LLCEstimate(llc, se, ess, rhat, int(losses.size))
