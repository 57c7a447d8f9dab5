"""Extending a reference: independent batches of chains of one problem pooled into one.

A reference is the mean of nβ(L_n(w) − L_n(w*)) over its draws. A second batch, sampled
with the same settings and another seed, estimates the same number independently, so the
pooled estimate is the draw-weighted mean of the batches and its variance the weighted
sum of theirs (each batch's SE already accounts for its chains' autocorrelation):

    llc = Σ c_i·llc_i / C,   se = sqrt(Σ (c_i / C)² · se_i²),   c_i = chains_i × draws_i

Two equal batches divide the SE by √2; k nights of extension by √(k + 1). Batches that
disagree (|llc_1 − llc_2| > 3·sqrt(se_1² + se_2²)) mean at least one of them did not mix:
the pooled reference is then marked untrusted rather than averaged into looking precise.

>>> base = {"llc_ref": 2.0, "se_ref": 0.1, "n_chains": 4, "n_draws": 2000, "ess": 900.0,
...         "rhat": 1.01, "divergences": 0, "grad_evals": 10, "runtime_sec": 1.0,
...         "transitions": 8000, "quality": "trusted", "quality_reasons": []}
>>> pooled = pool(base, {**base, "llc_ref": 2.1}, seed=1)
>>> round(pooled["llc_ref"], 3), round(pooled["se_ref"], 4), pooled["n_chains"]
(2.05, 0.0707, 8)
>>> [batch["seed"] for batch in pooled["batches"]]
[0, 1]
"""

from __future__ import annotations

import math
from typing import Any

# Fields that add up over batches.
_SUMMED = ("n_chains", "ess", "divergences", "grad_evals", "runtime_sec", "transitions")
# What each batch's verdict is re-derived from when the record is read (with _SUMMED's).
_DIAGNOSTICS = ("rhat", "budget_exhausted", "halves")
_QUALITY_ORDER = ("trusted", "warn", "untrusted")
DISAGREEMENT_Z = 3.0


def batches_of(record: dict[str, Any], base_seed: int = 0) -> list[dict[str, Any]]:
    """The batches a reference record is made of (a record never extended is one)."""
    if record.get("batches"):
        return list(record["batches"])
    return [_batch(record, base_seed)]


def next_seed(record: dict[str, Any], base_seed: int = 0) -> int:
    """A seed no batch of this reference has used."""
    return max(batch["seed"] for batch in batches_of(record, base_seed)) + 1


def pool(current: dict[str, Any], extra: dict[str, Any], seed: int) -> dict[str, Any]:
    """``current`` (a ref.json record, maybe already pooled) with the batch ``extra``
    (a fresh reference of the same problem and settings, sampled with ``seed``) added."""
    batches = batches_of(current) + [_batch(extra, seed)]
    weights = [batch["n_chains"] * batch["n_draws"] for batch in batches]
    total = sum(weights)
    llc = sum(w * batch["llc_ref"] for w, batch in zip(weights, batches, strict=True)) / total
    se = math.sqrt(
        sum(
            (w / total) ** 2 * batch["se_ref"] ** 2
            for w, batch in zip(weights, batches, strict=True)
        )
    )
    pooled = {**current, "llc_ref": llc, "se_ref": se, "batches": batches}
    for field in _SUMMED:
        pooled[field] = sum(batch[field] for batch in batches)
    pooled["rhat"] = max(batch["rhat"] for batch in batches)
    pooled["quality"], pooled["quality_reasons"] = pooled_verdict(batches)
    return pooled


def _batch(record: dict[str, Any], seed: int) -> dict[str, Any]:
    fields = ("llc_ref", "se_ref", "n_draws", "quality", "quality_reasons", *_SUMMED)
    return {
        "seed": seed,
        **{field: record[field] for field in fields},
        **{field: record.get(field) for field in _DIAGNOSTICS},
    }


def pooled_verdict(batches: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The worst batch's verdict, and untrusted where two batches disagree."""
    worst = max((batch["quality"] for batch in batches), key=_QUALITY_ORDER.index)
    reasons = sorted({reason for batch in batches for reason in batch["quality_reasons"]})
    first = batches[0]
    for batch in batches[1:]:
        z = abs(batch["llc_ref"] - first["llc_ref"]) / math.hypot(batch["se_ref"], first["se_ref"])
        if z > DISAGREEMENT_Z:
            worst = "untrusted"
            reasons.append(
                f"batch seed {batch['seed']} disagrees with the first: "
                f"{batch['llc_ref']:.3f} vs {first['llc_ref']:.3f} (z = {z:.1f})"
            )
    return worst, reasons
