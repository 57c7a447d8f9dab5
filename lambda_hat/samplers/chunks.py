"""The one budgeted chunk loop of every sampler, the HMC reference's included
(``drive_chunks``), and the cheap methods' use of it with burn-in and divergence checks
(``ChunkLoop``).

A run is a sequence of fixed-length compiled chunks. A chunk starts only if the slowest
chunk so far would still end before the run's deadline; the loop times itself, so tests
check the budget against its own measured chunk times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from lambda_hat.samplers.configs import Status
from lambda_hat.samplers.estimator import compiled_diagnostics


def explode_limit(d: int) -> float:
    """A kept draw with nβ·(L_n − L0) above this is an exploding run, not a sample.

    The LLC of a d-parameter model is at most d/2 and its posterior fluctuations are of
    order √d, so 100·max(d, 10) is far outside anything a working sampler produces.
    """
    return 100.0 * max(d, 10)


class ChunkOut(NamedTuple):
    """What a compiled chunk returns besides its new state."""

    losses: jax.Array  # (chains, draws) L_n at kept draws (draws may be 0)
    bad_fraction: jax.Array  # (chains,) fraction of steps the sampler rejected as invalid
    minibatch_losses: jax.Array | None = None  # (chains, draws), SGLD's cheap estimate


class Drive(NamedTuple):
    losses: np.ndarray  # (chains, kept draws)
    chunks_done: int
    status: Status
    reason: str | None
    state: Any
    minibatch_losses: np.ndarray | None = None
    # What the loop measured of its own time: its slowest chunk, the smallest margin
    # (deadline − start − slowest so far) with which it started a chunk (never below
    # FINISH_SEC), and when the loop ended (finishing is timed from there). Tests check the
    # budget with these, not with a wall-clock constant that a loaded machine breaks.
    timing: dict[str, float] | None = None


def divergence_reason(
    losses: np.ndarray,
    bad: np.ndarray,
    L0: float,
    n_beta: float,
    limit: float,
    max_bad: float = 0.5,
) -> str | None:
    """Why a run counts as diverged, or None: non-finite losses, an exploding loss, or a
    sampler that rejected more than ``max_bad`` of its steps as non-finite."""
    if not np.all(np.isfinite(losses)):
        chains = np.flatnonzero(~np.all(np.isfinite(losses), axis=1)).tolist()
        return f"non-finite loss in chains {chains}"
    if losses.size and np.max(n_beta * (losses - L0)) > limit:
        worst = float(np.max(n_beta * (losses - L0)))
        return f"exploding loss: nβ·(L_n − L0) = {worst:.3g} > {limit:.3g}"
    if bad.size and np.max(bad) > max_bad:
        return f"{float(np.max(bad)):.0%} of steps rejected as non-finite in one chain"
    return None


# Time kept back for finishing a budgeted run: the ESS/R-hat graph is compiled for the
# trace shape the run stopped at (0.25–0.4 s measured on 2 cores), which no earlier chunk
# could know. Without it 3 s trials ended at 3.35–3.5 s.
FINISH_SEC = 0.5


class Driven(NamedTuple):
    """What ``drive_chunks`` returns: the chunks' outputs (all of them, in order), how many
    ran, why it stopped, the last state, and the loop's own timing."""

    outputs: list[Any]
    chunks_done: int
    status: Status
    reason: str | None
    state: Any
    timing: dict[str, float]


def drive_chunks(
    chunk: Callable[[Any, jax.Array], tuple[Any, Any]],
    state: Any,
    key: jax.Array,
    *,
    num_chains: int,
    num_chunks: int,
    deadline: float | None,
    first_chunk_sec: float = 0.0,
    while_running: Callable[[int, Any], None] | None = None,
    check: Callable[[int, Any], str | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    enough: Callable[[list[Any]], bool] | None = None,
) -> Driven:
    """The one budgeted chunk loop of every sampler, the HMC reference's included.

    ``chunk(state, keys) -> (state, output)`` is one compiled call (``keys``: one per
    chain). A chunk starts only if the slowest chunk so far (``first_chunk_sec`` before
    any was timed) would still end ``FINISH_SEC`` before ``deadline``; otherwise the run
    stops as ``budget_exhausted``. ``while_running(index, output)`` is called while a
    chunk computes (its output's shapes are known: compile what stopping after it would
    need); ``check(index, output)``
    returns a reason to stop the run as ``diverged``, or None; ``enough(outputs)`` True
    ends it early as ``ok`` (a precision target met).
    """
    outputs: list[Any] = []
    slowest = first_chunk_sec
    timing: dict[str, float] = {"slowest_chunk_sec": 0.0}

    def stop(done: int, status: Status, reason: str | None) -> Driven:
        return Driven(outputs, done, status, reason, state, {**timing, "loop_ended_at":
                      time.perf_counter()})  # fmt: skip

    for index in range(num_chunks):
        started = time.perf_counter()  # one reading for the check and the record
        if deadline is not None and started + slowest + FINISH_SEC > deadline:
            return stop(index, "budget_exhausted", None)
        if deadline is not None:  # what the run's own clock said when it chose to go on
            margin = deadline - started - slowest
            timing["decision_margin_sec"] = min(timing.get("decision_margin_sec", margin), margin)
        key, sub = jax.random.split(key)
        state, output = chunk(state, jax.random.split(sub, num_chains))  # dispatched
        if while_running is not None:
            while_running(index, output)
        state, output = jax.block_until_ready((state, output))
        slowest = max(slowest, time.perf_counter() - started)
        timing["slowest_chunk_sec"] = slowest
        outputs.append(output)
        reason = None if check is None else check(index, output)
        if reason is not None:
            return stop(index + 1, "diverged", f"chunk {index}: {reason}")
        if progress is not None:
            progress(index + 1, num_chunks)
        if enough is not None and enough(outputs):
            return stop(index + 1, "ok", None)
    return stop(num_chunks, "ok", None)


class ChunkLoop:
    """The cheap methods' use of ``drive_chunks``: chunks return a ``ChunkOut``, the
    first ``discard`` chunks are burn-in (checked, not kept), and a chunk whose losses
    are non-finite or exploding, or whose sampler rejected too many steps, ends the run
    as diverged."""

    def __init__(self, chunk: Callable, *, num_chains: int, L0: float, n_beta: float, d: int):
        self.chunk, self.num_chains = chunk, num_chains
        self.L0, self.n_beta, self.limit = L0, n_beta, explode_limit(d)

    def run(
        self,
        state: Any,
        key: jax.Array,
        *,
        num_chunks: int,
        discard: int,
        keep_draws: int,
        deadline: float | None,
        progress: Callable[[int, int], None] | None = None,
        max_bad_fraction: float = 0.5,
    ) -> Drive:
        def while_running(index: int, out: ChunkOut) -> None:
            if index == discard and deadline is not None and keep_draws >= 4:
                # The run may stop after any kept chunk: compile the diagnostics for the
                # first possible trace shape now, so stopping never waits for a compile.
                compiled_diagnostics((self.num_chains, min(out.losses.shape[1], keep_draws)))

        def check(index: int, out: ChunkOut) -> str | None:
            losses, bad = np.asarray(out.losses), np.asarray(out.bad_fraction)
            return divergence_reason(losses, bad, self.L0, self.n_beta, self.limit,
                                     max_bad_fraction)  # fmt: skip

        driven = drive_chunks(
            self.chunk, state, key, num_chains=self.num_chains, num_chunks=num_chunks,
            deadline=deadline, while_running=while_running, check=check, progress=progress,
        )  # fmt: skip
        kept = [] if driven.status == "diverged" else driven.outputs[discard:]
        keep = 0 if driven.status == "diverged" else keep_draws
        losses = self._join([np.asarray(out.losses) for out in kept], keep)
        minibatch = [np.asarray(o.minibatch_losses) for o in kept if o.minibatch_losses is not None]
        return Drive(
            losses, driven.chunks_done, driven.status, driven.reason, driven.state,
            self._join(minibatch, keep) if minibatch else None, driven.timing,
        )  # fmt: skip

    def _join(self, parts: list[np.ndarray], keep_draws: int) -> np.ndarray:
        if not parts:
            return np.zeros((self.num_chains, 0))
        return np.concatenate(parts, axis=1)[:, :keep_draws]
