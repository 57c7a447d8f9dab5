"""Sharded references: the chains of one reference run as separate tasks, then pooled.

With ``ReferenceConfig(shards=k)`` each of k shards runs ``num_chains / k`` chains as its
own run (its own process or SLURM job, each chain with its own window adaptation from w*,
as always) with the seed ``seed·64 + index``, and stores its draws
(``<artifacts>/problems/<pid>/shards/<key>/shard-<index>.npz``). ``summarize`` then pools
them as one set of chains: R-hat, ESS, the two halves and the verdict are those of all
``num_chains`` chains, exactly as for an unsharded run of the same chains. With a precision
target, each shard aims at target·√k (k shards' pooled SE is about a shard's over √k).

>>> config = ReferenceConfig(num_chains=4, shards=4, seed=1)
>>> part = shard_config(config, 2)
>>> part.num_chains, part.seed, part.shards
(1, 66, 1)
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from lambda_hat.io import atomic_write_npz
from lambda_hat.reference.record import reference_code_version, reference_dir
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.reference_summary import Sampled, Tally

MAX_SHARDS = 64  # seeds seed·64 + index stay distinct across base seeds


def shard_config(config: ReferenceConfig, index: int) -> ReferenceConfig:
    """The run of shard ``index``: its share of the chains, its own seed, no second
    sampler (that runs once, on the pooled reference)."""
    if not 0 <= index < config.shards:
        raise ValueError(f"shard index {index} outside 0..{config.shards - 1}")
    target = config.target_rel_se
    return config.model_copy(
        update={
            "num_chains": config.num_chains // config.shards,
            "seed": config.seed * MAX_SHARDS + index,
            "shards": 1,
            "cross_check": False,
            "target_rel_se": None
            if target is None
            else min(target * math.sqrt(config.shards), 0.99),
        }
    )


def shard_path(artifacts_dir: Path, pid: str, config: ReferenceConfig, index: int) -> Path:
    key = reference_code_version(config).replace("+", "-")
    return reference_dir(artifacts_dir, pid) / "shards" / key / f"shard-{index}.npz"


def save_shard(path: Path, part: Sampled) -> None:
    """One shard's draws and counts, written atomically."""
    tally = part.tally
    margin = tally.decision_margin_sec
    atomic_write_npz(
        path,
        losses=tally.losses,
        grads=tally.grads,
        warmup_grads=part.warmup_grads,
        counts=np.array([tally.divergences, tally.grad_evals, int(tally.budget_exhausted)]),
        timing=np.array(
            [
                tally.acceptance,
                tally.slowest_chunk_sec,
                np.nan if margin is None else margin,
                part.step_size_mean,
                part.seconds,
            ]
        ),  # fmt: skip
    )


def load_shard(path: Path) -> Sampled:
    """A shard as ``save_shard`` wrote it (its clock readings restarted here)."""
    with np.load(path, allow_pickle=False) as saved:
        divergences, grad_evals, exhausted = (int(v) for v in saved["counts"])
        acceptance, slowest, margin, step_size, seconds = (float(v) for v in saved["timing"])
        tally = Tally(
            losses=saved["losses"], divergences=divergences, acceptance=acceptance,
            grad_evals=grad_evals, budget_exhausted=bool(exhausted), slowest_chunk_sec=slowest,
            ended_at=time.perf_counter(), grads=saved["grads"],
            decision_margin_sec=None if math.isnan(margin) else margin,
        )  # fmt: skip
        return Sampled(tally, saved["warmup_grads"], step_size, seconds)
