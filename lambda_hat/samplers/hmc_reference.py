"""The trusted reference: BlackJAX NUTS (or HMC) on the localized tempered posterior.

Every chain starts at w* and runs its own window adaptation (vmapped), then samples;
both in fixed-length compiled chunks, so that a wall-clock budget can end the run between
chunks (with the draws it has, or before the first one with ``BudgetError``). float64
throughout. For linear networks (dln, rrr) L_n is evaluated from the data's second moments
(``posterior.Moments``): the same posterior, with gradients whose cost does not grow with n.

>>> from lambda_hat.problems.specs import ProblemSpec
>>> from lambda_hat.problems.targets import build_problem
>>> spec = ProblemSpec.model_validate({"name": "doc", "model": {"family": "dln",
...     "widths": [2, 2]}, "teacher": {"rank": 2}, "data": {"n": 200}})
>>> result = run(build_problem(spec), ReferenceConfig(num_warmup=100, num_draws=200))
>>> abs(result.llc_ref - 2.0) < 0.5   # regular model, d = 4: λ = d/2 = 2
True
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.window_adaptation import build_schedule

from lambda_hat.problems.posterior import (
    LossData,
    Moments,
    PosteriorParams,
)
from lambda_hat.problems.targets import Problem
from lambda_hat.reference.record import ReferenceResult
from lambda_hat.samplers.chunks import Driven, drive_chunks
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.estimator import compiled_diagnostics, llc_from_losses
from lambda_hat.samplers.hmc_kernels import (
    Static,
    sample_chunk,
    warmup_chunk,
    warmup_end,
    warmup_start,
)
from lambda_hat.samplers.reference_summary import (
    Sampled,
    Tally,
    loss_at_w_star,
    sampled_data,
    summarize,
)


class BudgetError(RuntimeError):
    """The budget ended before a single draw could be kept. ``slowest_chunk_sec``: the
    slowest warmup chunk, when it ended during the warmup."""

    slowest_chunk_sec: float | None = None


def _warmup_lengths(static: Static) -> list[int]:
    """The warmup's chunks: as many transitions as a sampling chunk, the last shorter."""
    size = static.chunk_size * static.thinning
    full, rest = divmod(static.num_warmup, size)
    return [size] * full + ([rest] if rest else [])


def _step_keys(key: jax.Array, static: Static, steps: int) -> jax.Array:
    """(chains, steps) keys: each chain's key split as ``window_adaptation.run`` splits it."""
    return jax.vmap(lambda chain_key: jax.random.split(chain_key, steps))(
        jax.random.split(key, static.num_chains)
    )


class _Compiled(NamedTuple):
    warmup_start: Any
    warmup_chunks: dict[int, Any]  # by length
    warmup_end: Any
    chunk: Any
    schedule: jax.Array  # the warmup's (stage, window end) per step: a Python loop, once


@lru_cache(maxsize=32)
def _compiled(
    static: Static,
    kind: type[LossData | Moments],
    data_shapes: tuple[tuple[int, ...], ...],
    d: int,
):
    """Ahead-of-time compiled warmup (start, chunks, end) and sampling chunk for one (data
    kind and shapes, static config)."""
    f64 = jnp.float64
    key_spec = jax.eval_shape(lambda: jax.random.split(jax.random.key(0), static.num_chains))
    data = kind(*(jax.ShapeDtypeStruct(shape, f64) for shape in data_shapes))
    post = PosteriorParams(
        jax.ShapeDtypeStruct((d,), f64),
        jax.ShapeDtypeStruct((), f64),
        jax.ShapeDtypeStruct((), f64),
    )
    positions = jax.ShapeDtypeStruct((static.num_chains, d), f64)
    start = jax.jit(warmup_start, static_argnames="static")
    start = start.lower(positions, data, post, static=static).compile()
    warmup_chunks = {}
    for steps in set(_warmup_lengths(static)):
        step_keys = jax.eval_shape(lambda steps=steps: _step_keys(jax.random.key(0), static, steps))
        schedule = jax.ShapeDtypeStruct((steps, 2), jnp.int32)
        warmup = jax.jit(warmup_chunk, static_argnames="static")
        warmup_chunks[steps] = warmup.lower(
            start.out_info, step_keys, schedule, data, post, static=static
        ).compile()
    end = jax.jit(warmup_end, static_argnames="static")
    end = end.lower(start.out_info[1], static=static).compile()
    states = start.out_info[0]  # the sampling chunk starts where the warmup ends
    chunk = jax.jit(sample_chunk, static_argnames="static")
    chunk = chunk.lower(key_spec, states, end.out_info, data, post, static=static).compile()
    schedule = build_schedule(static.num_warmup).astype(jnp.int32)
    return _Compiled(start, warmup_chunks, end, chunk, schedule)


def _warm_up(compiled: _Compiled, problem: Problem, data, post, key: jax.Array,
             static: Static, deadline: float | None):  # fmt: skip
    """Every chain's window adaptation from w*, in budgeted chunks (``drive_chunks``):
    (states, parameters, gradient evaluations per chain), or the stopped ``Driven`` when
    the budget ended first. Each chain's keys and schedule are those of one
    ``window_adaptation.run``."""
    positions = jnp.tile(problem.w_star, (static.num_chains, 1))
    carry = compiled.warmup_start(positions, data, post)
    step_keys = _step_keys(key, static, static.num_warmup)
    schedule = compiled.schedule
    lengths = _warmup_lengths(static)
    ends = list(itertools.accumulate(lengths))
    windows = iter([slice(end - length, end) for end, length in zip(ends, lengths, strict=True)])

    def warmup_chunk(carry, _keys):  # (drive_chunks' keys unused: the run's are fixed)
        window = next(windows)  # drive_chunks calls it once per chunk, in order
        return compiled.warmup_chunks[window.stop - window.start](
            carry, step_keys[:, window], schedule[window], data, post
        )

    driven = drive_chunks(
        warmup_chunk, carry, key, num_chains=static.num_chains, num_chunks=len(lengths),
        deadline=deadline,
    )  # fmt: skip
    if driven.status != "ok":
        return driven  # stopped by the budget: the caller says how far it got
    states, adaptations = driven.state
    grads = sum(np.asarray(output) for output in driven.outputs)
    return states, compiled.warmup_end(adaptations), grads


def _relative_se(outputs, L0: float, n_beta: float) -> float:
    """se/|llc| of the draws so far (outputs[i][0]: each chunk's losses)."""
    losses = np.concatenate([np.asarray(output[0]) for output in outputs], axis=1)
    if losses.shape[0] == 1:  # a one-chain shard: its two halves as two chains (split R-hat)
        half = losses.shape[1] // 2
        losses = losses[:, : 2 * half].reshape(2, half)
    estimate = llc_from_losses(losses, L0, n_beta)
    return estimate.se / max(abs(estimate.llc), 1e-300)


def _sample(
    chunk, states, parameters, data, post, key, config: ReferenceConfig, static: Static, *,
    deadline: float | None, first_chunk_sec: float, progress, L0: float, n_beta: float,
) -> Tally | None:  # fmt: skip
    """Compiled chunks of ``chunk_size`` draws until ``num_draws`` are kept or the budget
    ends (``chunks.drive_chunks``, the loop every sampler shares); with a precision target,
    on until se/llc meets it or ``draw_cap`` draws are kept."""
    size = static.chunk_size
    cap = config.draw_cap
    num_chunks = -(-cap // size)

    def enough(outputs) -> bool:
        kept = len(outputs) * size
        if config.target_rel_se is None or kept < config.num_draws:
            return config.target_rel_se is None and kept >= config.num_draws
        return _relative_se(outputs, L0, n_beta) <= config.target_rel_se

    def run_chunk(states, keys):
        states, *out = chunk(keys, states, parameters, data, post)
        return states, tuple(out)

    def while_running(index: int, out) -> None:
        if deadline is not None:
            # Any chunk may be the last under a budget: compile the diagnostics for the
            # trace it completes while it runs, so stopping never waits for a compile.
            compiled_diagnostics((config.num_chains, min((index + 1) * size, cap)))

    driven = drive_chunks(
        run_chunk, states, key, num_chains=config.num_chains, num_chunks=num_chunks,
        deadline=deadline, first_chunk_sec=first_chunk_sec, while_running=while_running,
        progress=progress and (lambda done, _: progress(min(done * size, cap), cap)),
        enough=enough,
    )  # fmt: skip
    if not driven.outputs:
        return None
    losses, divergent, accept, grads = (
        [np.asarray(output[part]) for output in driven.outputs] for part in range(4)
    )
    join = lambda parts: np.concatenate(parts, axis=1)[:, :cap]  # noqa: E731
    return Tally(
        join(losses),
        sum(int(np.sum(part)) for part in divergent),
        float(np.mean(accept)),
        sum(int(np.sum(part)) for part in grads),
        driven.status == "budget_exhausted",
        driven.timing["slowest_chunk_sec"],
        driven.timing["loop_ended_at"],
        join(grads),
        driven.timing.get("decision_margin_sec"),
    )


def _static(problem: Problem, config: ReferenceConfig) -> Static:
    return Static(
        arch=problem.arch,
        algorithm=config.algorithm,
        num_chains=config.num_chains,
        num_warmup=config.num_warmup,
        chunk_size=min(config.chunk_size, config.num_draws),
        thinning=config.thinning,
        target_accept=config.target_accept,
        dense_mass=config.mass_matrix == "dense",
        max_num_doublings=config.max_num_doublings,
        num_integration_steps=config.num_integration_steps,
    )


def sample(
    problem: Problem,
    config: ReferenceConfig,
    *,
    budget_sec: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Sampled:
    """Warm up ``config.num_chains`` chains from w* and keep their draws (``run`` without
    the estimate). Raises ``BudgetError`` when the budget ends before the first draw."""
    start = time.perf_counter()
    static = _static(problem, config)
    data = sampled_data(problem, config)
    compiled = _compiled(static, type(data), tuple(a.shape for a in data), problem.d)
    post = problem.posterior_params()
    key_warmup, key_sample = jax.random.split(jax.random.key(config.seed))
    deadline = None if budget_sec is None else start + budget_sec
    warmup_start = time.perf_counter()
    warmed = _warm_up(compiled, problem, data, post, key_warmup, static, deadline)
    if isinstance(warmed, Driven):
        error = BudgetError(
            f"budget_sec={budget_sec:g} ended during the warmup, after {warmed.chunks_done} of "
            f"{len(_warmup_lengths(static))} chunks ({time.perf_counter() - start:.1f} s, "
            "compile included); raise it or lower num_warmup"
        )
        error.slowest_chunk_sec = warmed.timing["slowest_chunk_sec"]
        raise error
    states, parameters, warmup_grads = warmed
    # Until a chunk has been timed, predict its cost from the warmup's time per transition
    # (pessimistic: early warmup uses small steps and long trajectories).
    per_transition = (time.perf_counter() - warmup_start) / config.num_warmup
    tally = _sample(
        compiled.chunk, states, parameters, data, post, key_sample, config, static,
        deadline=deadline, first_chunk_sec=per_transition * static.chunk_size * static.thinning,
        progress=progress, L0=loss_at_w_star(problem, config), n_beta=problem.n_beta,
    )  # fmt: skip
    if tally is None:
        raise BudgetError(
            f"budget_sec={budget_sec:g} ended before the first draw "
            f"(compile + warmup took {time.perf_counter() - start:.1f} s); "
            "raise it or lower num_warmup"
        )
    return Sampled(
        tally, np.asarray(warmup_grads), float(np.mean(parameters["step_size"])),
        time.perf_counter() - start,
    )  # fmt: skip


def run(
    problem: Problem,
    config: ReferenceConfig | None = None,
    *,
    budget_sec: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ReferenceResult:
    """Sample the posterior of ``problem`` and estimate its LLC.

    ``budget_sec`` bounds the wall-clock time of the whole call (compile, warmup, sampling,
    diagnostics): sampling stops before a chunk that would end past it, and the result says
    ``budget_exhausted``. The warmup runs in chunks under the same rule; if the budget
    ends before the warmup does, or before the first draw, ``BudgetError`` says so.
    Writes no file: ``lambda_hat.reference.record.write_reference`` saves the result.
    ``progress(kept_draws_per_chain, num_draws)`` is called after every chunk.
    """
    config = config or ReferenceConfig()
    start = time.perf_counter()
    part = sample(problem, config, budget_sec=budget_sec, progress=progress)
    deadline = None if budget_sec is None else start + budget_sec
    return summarize(problem, config, [part], deadline=deadline, started=start)
