"""From a reference's draws to its ``ReferenceResult``: the estimate, the verdict, the
second sampler's check, and the pooling of shards (several runs' chains as one set).

``lambda_hat.samplers.hmc_reference`` samples; this module summarizes, for one run or for
the shards of one (``lambda_hat.samplers.reference_shards``).
"""

from __future__ import annotations

import logging
import time
from typing import NamedTuple

import numpy as np

from lambda_hat.problems.posterior import LossData, Moments, empirical_loss
from lambda_hat.problems.targets import Problem
from lambda_hat.reference.quality import convergence_evidence, judge
from lambda_hat.reference.record import ReferenceResult, reference_code_version
from lambda_hat.samplers import adjusted_mclmc
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.estimator import llc_from_losses

log = logging.getLogger(__name__)


def sampled_data(problem: Problem, config: ReferenceConfig) -> LossData | Moments:
    """What the log density reads: the second moments where they suffice, else the rows."""
    return problem.full_batch_data if config.sufficient_statistics else problem.data


class Tally(NamedTuple):
    losses: np.ndarray  # (chains, kept draws) of L_n
    divergences: int
    acceptance: float
    grad_evals: int
    budget_exhausted: bool
    slowest_chunk_sec: float
    ended_at: float
    grads: np.ndarray  # (chains, kept draws): gradient evaluations behind each kept draw
    decision_margin_sec: float | None  # min over chunk starts of deadline − start − slowest


class Sampled(NamedTuple):
    """The draws of one reference run, or of one shard of its chains, before the estimate:
    what ``summarize`` pools (``lambda_hat.samplers.reference_shards`` stores it)."""

    tally: Tally
    warmup_grads: np.ndarray  # (chains,) gradient evaluations of each chain's warmup
    step_size_mean: float
    seconds: float  # wall-clock time of this part


def loss_at_w_star(problem: Problem, config: ReferenceConfig) -> float:
    # L0 from the same expression as the draws' L_n (they differ by rounding only).
    return float(empirical_loss(problem.w_star, sampled_data(problem, config), problem.arch))


def _merged(tallies: list[Tally]) -> Tally:
    """Shards' tallies as one set of chains (each truncated to the fewest draws kept)."""
    if len(tallies) == 1:
        return tallies[0]
    draws = min(tally.losses.shape[1] for tally in tallies)
    chains = [tally.losses.shape[0] for tally in tallies]
    return Tally(
        np.concatenate([tally.losses[:, :draws] for tally in tallies]),
        sum(tally.divergences for tally in tallies),
        float(np.average([tally.acceptance for tally in tallies], weights=chains)),
        sum(tally.grad_evals for tally in tallies),
        any(tally.budget_exhausted for tally in tallies),
        max(tally.slowest_chunk_sec for tally in tallies),
        max(tally.ended_at for tally in tallies),
        np.concatenate([tally.grads[:, :draws] for tally in tallies]),
        min((t.decision_margin_sec for t in tallies if t.decision_margin_sec is not None),
            default=None),
    )  # fmt: skip


def _verdict(tally: Tally, L0: float, n_beta: float, config: ReferenceConfig, second: dict | None):
    """The LLC estimate and its quality verdict (lambda_hat.reference.quality), with the
    two halves of the chains compared (a slow mode that every chain misses alike shows)
    and, with ``second``, the second sampler's estimate."""
    estimate = llc_from_losses(tally.losses, L0, n_beta)
    half = config.num_chains // 2
    first = llc_from_losses(tally.losses[:half], L0, n_beta)
    later = llc_from_losses(tally.losses[half:], L0, n_beta)
    diagnostics = {
        "rhat": estimate.rhat,
        "ess": estimate.ess,
        "divergences": tally.divergences,
        "transitions": int(tally.losses.size) * config.thinning,
        "budget_exhausted": tally.budget_exhausted,
        "halves": (first.llc, first.se, later.llc, later.se),
        "second": None if second is None else (estimate.llc, estimate.se, second["llc"],
                                               second["se"]),
    }  # fmt: skip
    quality, reasons = judge(**diagnostics)
    return estimate, quality, reasons, diagnostics


def _cross_check(
    problem: Problem, config: ReferenceConfig, deadline: float | None, spent: float
) -> dict | None:
    """The second sampler's estimate (``config.cross_check``), unless the budget left is
    shorter than the reference took so far (it costs less than NUTS; a guard, not a
    prediction): then None, and the verdict is NUTS's alone."""
    if not config.cross_check:
        return None
    if deadline is not None and deadline - time.perf_counter() < spent:
        log.warning("%s: too little budget left for the cross-check; skipped", problem.pid)
        return None
    return adjusted_mclmc.run(
        problem, num_chains=config.num_chains, num_tune=2 * config.num_warmup,
        num_draws=config.num_draws, seed=config.seed + 1,
    )  # fmt: skip


def summarize(
    problem: Problem,
    config: ReferenceConfig,
    parts: list[Sampled],
    *,
    deadline: float | None = None,
    started: float | None = None,
) -> ReferenceResult:
    """The reference from the draws of one run, or of every shard of its chains pooled as
    one set of chains (R-hat, ESS and the halves over all of them), with the second
    sampler's check when ``config.cross_check``."""
    start = time.perf_counter() if started is None else started
    tally = _merged([part.tally for part in parts])
    warmup_grads = np.concatenate([part.warmup_grads for part in parts])
    L0 = loss_at_w_star(problem, config)
    # Shards ran elsewhere, side by side: the slowest one is the time spent sampling.
    shards = started is None
    spent = max(part.seconds for part in parts) if shards else time.perf_counter() - start
    second = _cross_check(problem, config, deadline, spent)
    estimate, quality, reasons, diagnostics = _verdict(tally, L0, problem.n_beta, config, second)
    evidence = convergence_evidence(
        problem.n_beta * (tally.losses - L0),
        tally.grads,
        warmup_grads,
        estimate.se,
    )
    theory = problem.lambda_theory
    result = ReferenceResult(
        pid=problem.pid,
        llc_ref=estimate.llc,
        se_ref=estimate.se,
        ess=estimate.ess,
        rhat=estimate.rhat,
        n_draws=estimate.n_draws,
        n_chains=config.num_chains,
        divergences=tally.divergences,
        acceptance=tally.acceptance,
        grad_evals=int(np.sum(warmup_grads)) + tally.grad_evals,
        runtime_sec=time.perf_counter() - start + (spent if shards else 0.0),
        L0=problem.L0,
        n=problem.n,
        beta=problem.beta,
        gamma=problem.gamma,
        d=problem.d,
        w_star_grad_norm=problem.grad_norm,
        w_star_hessian_min_eig=problem.hessian_min_eig,
        w_star_hessian_max_eig=problem.hessian_max_eig,
        budget_exhausted=tally.budget_exhausted,
        cross_check=second,
        precision_target=config.target_rel_se,
        precision_met=None
        if config.target_rel_se is None
        else bool(estimate.se <= config.target_rel_se * abs(estimate.llc)),
        code_version=reference_code_version(config),
        lambda_theory=float(theory.lam) if theory else None,
        lambda_multiplicity=theory.multiplicity if theory else None,
        algorithm=config.algorithm,
        step_size_mean=float(np.mean([part.step_size_mean for part in parts])),
        slowest_chunk_sec=tally.slowest_chunk_sec,
        finish_sec=time.perf_counter() - tally.ended_at,
        decision_margin_sec=tally.decision_margin_sec,
        quality=quality,
        quality_reasons=reasons,
        transitions=diagnostics["transitions"],
        halves=diagnostics["halves"],
        convergence=evidence,
    )
    return result
