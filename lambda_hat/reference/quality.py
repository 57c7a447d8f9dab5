"""A verdict on every HMC reference, and the convergence evidence kept beside it.

``judge`` turns a reference's diagnostics into ``trusted`` | ``warn`` | ``untrusted`` with
the reasons. The thresholds follow the usual MCMC practice (Vehtari et al. 2021: R-hat
below 1.01, a bulk ESS of at least 400 before trusting a mean), plus what this project's
posteriors need: divergences mean a region the sampler could not enter (the singular
necks), and two independent halves of the chains must agree within their combined SE
(the only check on a slow mode that every chain misses alike in the ESS).

>>> judge(rhat=1.002, ess=1800, divergences=0, transitions=2400, budget_exhausted=False,
...       halves=(3.01, 0.03, 2.98, 0.03))
('trusted', [])
>>> judge(rhat=1.2, ess=30, divergences=0, transitions=80, budget_exhausted=False)[0]
'untrusted'
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Quality = Literal["trusted", "warn", "untrusted"]

RHAT_WARN, RHAT_BAD = 1.01, 1.05
ESS_WARN, ESS_BAD = 400.0, 100.0
DIVERGENT_WARN, DIVERGENT_BAD = 0.005, 0.05  # fraction of sampling transitions
HALVES_WARN, HALVES_BAD = 3.0, 5.0  # |difference| in units of the combined SE
SECOND_WARN, SECOND_BAD = 3.0, 4.0  # NUTS vs the second sampler, in combined SE


def judge(
    *,
    rhat: float,
    ess: float,
    divergences: int,
    transitions: int,
    budget_exhausted: bool,
    halves: tuple[float, float, float, float] | None = None,
    second: tuple[float, float, float, float] | None = None,
) -> tuple[Quality, list[str]]:
    """The verdict and its reasons (empty when trusted). ``halves`` is (mean, se, mean,
    se) of two disjoint halves of the chains; ``second`` (mean, se, mean, se) of the
    reference and of an independent second sampler (``ReferenceConfig.cross_check``)."""
    bad, warn = [], []
    if not math.isfinite(rhat) or rhat > RHAT_BAD:
        bad.append(f"R-hat {rhat:.3f} > {RHAT_BAD}")
    elif rhat > RHAT_WARN:
        warn.append(f"R-hat {rhat:.3f} > {RHAT_WARN}")
    if not math.isfinite(ess) or ess < ESS_BAD:
        bad.append(f"ESS {ess:.0f} < {ESS_BAD:.0f}")
    elif ess < ESS_WARN:
        warn.append(f"ESS {ess:.0f} < {ESS_WARN:.0f}")
    rate = divergences / max(transitions, 1)
    if rate > DIVERGENT_BAD:
        bad.append(f"{divergences} divergent transitions ({rate:.1%} > {DIVERGENT_BAD:.0%})")
    elif rate > DIVERGENT_WARN:
        warn.append(f"{divergences} divergent transitions ({rate:.1%} > {DIVERGENT_WARN:.1%})")
    if budget_exhausted:
        warn.append("the budget ended sampling early")
    if halves is not None:
        m1, _, m2, _ = halves
        z = _z(halves)
        text = f"two halves of the chains disagree: {m1:.4g} vs {m2:.4g} ({z:.1f} SE)"
        _grade(z, text, HALVES_WARN, HALVES_BAD, warn, bad)
    if second is not None:
        m1, _, m2, s2 = second
        z = _z(second)
        text = f"the second sampler disagrees: {m2:.4g} ± {s2:.2g} vs {m1:.4g} ({z:.1f} SE)"
        _grade(z, text, SECOND_WARN, SECOND_BAD, warn, bad)
    if bad:
        return "untrusted", bad + warn
    return ("warn", warn) if warn else ("trusted", [])


def _z(pair: tuple[float, float, float, float]) -> float:
    """|mean₁ − mean₂| in units of their combined SE (∞ when both SEs are 0)."""
    m1, s1, m2, s2 = pair
    return abs(m1 - m2) / math.sqrt(s1**2 + s2**2) if s1 > 0 or s2 > 0 else math.inf


def _grade(z: float, text: str, warn_at: float, bad_at: float, warn: list, bad: list) -> None:
    if not math.isfinite(z) or z > bad_at:
        bad.append(text)
    elif z > warn_at:
        warn.append(text)


def rejudge(record: dict) -> tuple[Quality, list[str]]:
    """A ``ref.json`` record's verdict derived again from its stored diagnostics (each
    batch's, for a pooled record), so that a verdict edited or carried over from another
    version is never what decides. Raises KeyError when a diagnostic is missing.

    >>> record = {"rhat": 1.3, "ess": 900.0, "divergences": 0, "transitions": 8000,
    ...           "budget_exhausted": False, "halves": None, "quality": "trusted"}
    >>> rejudge(record)
    ('untrusted', ['R-hat 1.300 > 1.05'])
    """
    from lambda_hat.reference.pool import pooled_verdict

    if record.get("batches"):
        batches = []
        for batch in record["batches"]:
            quality, reasons = _judged(batch)
            batches.append({**batch, "quality": quality, "quality_reasons": reasons})
        return pooled_verdict(batches)
    return _judged(record)


def _judged(diagnostics: dict) -> tuple[Quality, list[str]]:
    halves, other = diagnostics["halves"], diagnostics.get("cross_check")
    second = None
    if other is not None:
        llc, se = float(diagnostics["llc_ref"]), float(diagnostics["se_ref"])
        second = (llc, se, float(other["llc"]), float(other["se"]))
    return judge(
        rhat=float(diagnostics["rhat"]),
        ess=float(diagnostics["ess"]),
        divergences=int(diagnostics["divergences"]),
        transitions=int(diagnostics["transitions"]),
        budget_exhausted=bool(diagnostics["budget_exhausted"]),
        halves=None if halves is None else tuple(float(v) for v in halves),
        second=second,
    )


def convergence_evidence(
    llc_draws: np.ndarray,
    grads: np.ndarray,
    warmup_grads: np.ndarray,
    se_final: float,
    points: int = 60,
    trace_points: int = 400,
) -> dict:
    """What the report plots for a reference: each chain's trace of nβ(L_n − L0)
    (thinned), and the running mean ± 2 SE of the pooled chains against the gradient
    evaluations spent (warmup included). The running SE scales the final SE by
    √(draws / draws so far), i.e. assumes the ESS grows linearly with the draws.

    >>> draws = np.ones((4, 100)); ev = convergence_evidence(draws, np.ones((4, 100)),
    ...     np.full(4, 10), 0.1, points=5)
    >>> ev["running_mean"][-1], len(ev["grad_evals"])
    (1.0, 5)
    """
    chains, total = llc_draws.shape
    ends = np.unique(np.linspace(1, total, min(points, total)).round().astype(int))
    cumulative = np.cumsum(grads.sum(axis=0)) + float(np.sum(warmup_grads))
    prefix_means = np.cumsum(llc_draws, axis=1) / np.arange(1, total + 1)
    pooled = prefix_means.mean(axis=0)
    step = max(total // trace_points, 1)
    return {
        "grad_evals": [float(cumulative[k - 1]) for k in ends],
        "draws_per_chain": [int(k) for k in ends],
        "running_mean": [float(pooled[k - 1]) for k in ends],
        "running_se": [float(se_final * math.sqrt(total / k)) for k in ends],
        "chain_running_mean": [
            [float(prefix_means[c, k - 1]) for k in ends] for c in range(chains)
        ],
        "trace_every": step,
        "trace": [[float(v) for v in llc_draws[c, ::step]] for c in range(chains)],
    }
