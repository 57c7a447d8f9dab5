"""Closed-form learning coefficients (real log canonical thresholds).

Exact rational values with their multiplicities, so tests can compare them without
floating-point slack and the HMC reference can be validated against them.

>>> rrr(4, 3, 5, 1).lam
Fraction(7, 1)
>>> dln([5, 3, 5], 0).lam == rrr(5, 3, 5, 0).lam == Fraction(13, 2)
True
>>> regular(27).lam
Fraction(27, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class LearningCoefficient:
    """A learning coefficient λ and its multiplicity m (None where no verified form is known)."""

    lam: Fraction
    multiplicity: int | None

    def __float__(self) -> float:
        return float(self.lam)


def regular(d: int) -> LearningCoefficient:
    """A regular (identifiable, non-degenerate Fisher) model with d parameters: λ = d/2."""
    if d < 0:
        raise ValueError(f"d must be >= 0, got {d}")
    return LearningCoefficient(Fraction(d, 2), 1)


def rrr(m_in: int, h: int, n_out: int, r: int) -> LearningCoefficient:
    """Reduced-rank regression y = B·A·x (A: H×M, B: N×H) with true rank r.

    Aoyagi & Watanabe (2005), "Stochastic complexities of reduced rank regression in
    Bayesian estimation", Neural Networks 18(7), main theorem.
    """
    m, n = m_in, n_out
    _check_rank(r, (m, h, n))
    if n + r <= m + h and m + r <= n + h and h + r <= m + n:
        numerator = 2 * (h + r) * (m + n) - (m - n) ** 2 - (h + r) ** 2
        odd = (m + h + n + r) % 2 == 1
        lam = Fraction(numerator, 8) + (Fraction(1, 8) if odd else 0)
        return LearningCoefficient(lam, 2 if odd else 1)
    if m + h < n + r:
        return LearningCoefficient(Fraction(h * m - h * r + n * r, 2), 1)
    if n + h < m + r:
        return LearningCoefficient(Fraction(h * n - h * r + m * r, 2), 1)
    return LearningCoefficient(Fraction(m * n, 2), 1)  # m + n < h + r


def dln(widths: Sequence[int], r: int) -> LearningCoefficient:
    """Deep linear network with layer widths H1 (input) … H_{L+1} (output), true rank r.

    Aoyagi (2024), "Consideration on the learning efficiency of multiple-layered neural
    networks with linear units", Neural Networks 172, Theorem 1. With M_j = H_j − r, take
    the set S of the l+1 smallest M_j such that max_S M < min_{not S} M,
    Σ_S M ≥ l·max_S M and Σ_S M < l·min_{not S} M. Then with K = ⌈Σ_S M / l⌉ and
    a = Σ_S M − (K−1)·l:

        λ = (−r² + r(H1 + H_{L+1}))/2 + a(l−a)/(4l) − l(l−1)/4·(Σ_S M/l)²
            + ½ Σ_{i<j∈S} M_i M_j,

    with multiplicity 1 if a = l and 2 otherwise for l ≤ 2 (where it agrees with RRR). For
    l ≥ 3 the multiplicity is left as None: the same rule would give 2 for widths
    [1, 1, 1, 1], r = 0, whose K(w) = (abc)² is already normal crossing with m = 3.
    """
    widths = list(widths)
    if len(widths) < 2:
        raise ValueError(f"widths needs at least 2 entries (input, output), got {widths}")
    _check_rank(r, widths)
    reduced = sorted(w - r for w in widths)
    subset = _aoyagi_subset(reduced)
    ell = len(subset) - 1
    total = sum(subset)
    k = -(-total // ell)  # ceil
    a = total - (k - 1) * ell
    pairs = sum(
        subset[i] * subset[j] for i in range(len(subset)) for j in range(i + 1, len(subset))
    )
    lam = (
        Fraction(-(r**2) + r * (widths[0] + widths[-1]), 2)
        + Fraction(a * (ell - a), 4 * ell)
        - Fraction(ell * (ell - 1), 4) * Fraction(total, ell) ** 2
        + Fraction(pairs, 2)
    )
    multiplicity = (1 if a == ell else 2) if ell <= 2 else None
    return LearningCoefficient(lam, multiplicity)


def _aoyagi_subset(sorted_m: list[int]) -> list[int]:
    """The unique prefix S (size ≥ 2) of the sorted M_j meeting Aoyagi's conditions."""
    for size in range(2, len(sorted_m) + 1):
        subset, rest = sorted_m[:size], sorted_m[size:]
        ell = size - 1
        if rest and not max(subset) < min(rest):
            continue
        if sum(subset) < ell * max(subset):
            continue
        if rest and not sum(subset) < ell * min(rest):
            continue
        return subset
    raise AssertionError(f"no Aoyagi subset for {sorted_m}")  # the theorem says one exists


def _check_rank(r: int, widths: Sequence[int]) -> None:
    if any(w < 1 for w in widths):
        raise ValueError(f"widths must be >= 1, got {list(widths)}")
    if not 0 <= r <= min(widths):
        raise ValueError(f"rank r must be in [0, {min(widths)}] (the smallest width), got {r}")
