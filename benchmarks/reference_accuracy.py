"""Reference accuracy at realistic size: HMC llc_ref against closed-form λ over data seeds.

    .venv/bin/python benchmarks/reference_accuracy.py                 # the full suite
    .venv/bin/python benchmarks/reference_accuracy.py --quick         # 4 of the 8 problems

For every sample size n (default 1e4 and 1e6), problem and data seed it prints and records
λ_theory, llc_ref ± SE, R-hat, divergences and runtime; per (n, problem) the mean over seeds,
the relative bias, the seed-to-seed spread and the √(λβ/2) scale it should be compared with;
and the HMC gradient throughput against bare jitted ``value_and_grad`` loops on the same
loss (chain-vmapped, and one chain). The reference evaluates these linear networks' L_n
from the data's second moments, so a gradient costs the same at every n. Results go to
``benchmarks/results/reference_accuracy.json`` (rewritten atomically after every run).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.io import atomic_write_json
from lambda_hat.problems.optimum import OptimumError
from lambda_hat.problems.posterior import Moments, log_density
from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run, sampled_data

# (name, model, true rank): RRR and DLN, d from 20 to ~500, several ranks.
SUITE = [
    ("rrr_4_3_5_r1", {"family": "rrr", "m_in": 4, "hidden": 3, "n_out": 5}, 1),  # d=27
    ("rrr_5_4_5_r2", {"family": "rrr", "m_in": 5, "hidden": 4, "n_out": 5}, 2),  # d=40
    ("rrr_4_2_6_r0", {"family": "rrr", "m_in": 4, "hidden": 2, "n_out": 6}, 0),  # d=20
    ("dln_4_4_3_4_r2", {"family": "dln", "widths": [4, 4, 3, 4]}, 2),  # d=40
    ("dln_5_3_5_r1", {"family": "dln", "widths": [5, 3, 5]}, 1),  # d=30
    ("dln_6_5_5_6_r3", {"family": "dln", "widths": [6, 5, 5, 6]}, 3),  # d=85
    ("dln_10x4_r2", {"family": "dln", "widths": [10, 10, 10, 10]}, 2),  # d=300
    ("dln_12_12_12_8_r4", {"family": "dln", "widths": [12, 12, 12, 12, 8]}, 4),  # d=528
]
QUICK = ["rrr_4_3_5_r1", "rrr_4_2_6_r0", "dln_4_4_3_4_r2", "dln_5_3_5_r1"]


def bare_grad_throughput(problem, config: ReferenceConfig, vmapped: bool = True) -> float:
    """Gradients per second of a jitted value_and_grad loop on the loss the reference
    samples (the ceiling): over ``num_chains`` chains vmapped, or over one chain."""
    post, data = problem.posterior_params(), sampled_data(problem, config)
    num_chains = config.num_chains if vmapped else 1
    grad = jax.vmap(jax.value_and_grad(lambda w: log_density(w, data, post, problem.arch)))
    steps = 200_000 if isinstance(data, Moments) else 2000  # moments: µs per grad

    @jax.jit
    def loop(w):
        def step(w, _):
            value, g = grad(w)
            return w + 1e-9 * g, value.sum()

        return jax.lax.scan(step, w, None, length=steps)

    w = jnp.tile(problem.w_star, (num_chains, 1))
    jax.block_until_ready(loop(w))  # compile
    timings = []
    for _ in range(3):  # best of 3: one timing on 2 shared cores is noisy
        started = time.perf_counter()
        jax.block_until_ready(loop(w))
        timings.append(time.perf_counter() - started)
    return num_chains * steps / min(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--problems", nargs="*", help="names from the suite")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--beta0", type=float, default=1.0)
    parser.add_argument(
        "--saddle-tol",
        type=float,
        default=1e-6,
        help="optimum.saddle_tol (at n = 1e6 the noise-fitting curvature of a deep linear "
        "network is itself ~1e-6 of the largest: see docs/reference-accuracy.md)",
    )
    parser.add_argument("--num-warmup", type=int, default=1000)
    parser.add_argument("--num-draws", type=int, default=2000)
    parser.add_argument("--algorithm", choices=["nuts", "hmc"], default="nuts")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/reference_accuracy.json")
    )
    args = parser.parse_args()
    enable_compilation_cache()
    names = args.problems or (QUICK if args.quick else [name for name, _, _ in SUITE])
    unknown = sorted(set(names) - {name for name, _, _ in SUITE})
    if unknown:
        print(f"error: --problems: unknown {unknown}", file=sys.stderr)
        return 2
    config = ReferenceConfig(
        algorithm=args.algorithm, num_warmup=args.num_warmup, num_draws=args.num_draws
    )
    report = {"settings": vars(args) | {"out": str(args.out)}, "problems": []}
    for n in args.n:
        for name, model, rank in SUITE:
            if name in names:
                report["problems"].append(run_problem(name, model, rank, n, config, args))
                atomic_write_json(args.out, report)
    for n in args.n:
        biases = [abs(p["relative_bias"]) for p in report["problems"] if p["n"] == n and p["runs"]]
        if not biases:
            continue
        print(
            f"n={n}: |relative bias| median {100 * np.median(biases):.1f}%, "
            f"worst {100 * max(biases):.1f}% over {len(biases)} problems"
        )
    return 0


def run_problem(name: str, model: dict, rank: int, n: int, config, args) -> dict:
    """Every data seed of one problem at one n, and the summary over them."""
    runs, refused = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        spec = ProblemSpec.model_validate(
            {
                "name": name,
                "model": model,
                "teacher": {"rank": rank},
                "data": {"n": n},
                "posterior": {"gamma": args.gamma, "beta0": args.beta0},
                "optimum": {"saddle_tol": args.saddle_tol},
                "seed": seed,
            }
        )
        try:
            problem = build_problem(spec)
        except OptimumError as error:  # recorded, and the suite goes on
            print(f"{name:<20} seed {seed} refused: {error}", flush=True)
            refused.append({"seed": seed, "error": str(error)})
            continue
        result = run(problem, config)
        runs.append(result.model_dump())
        print(
            f"{name:<20} seed {seed} d={problem.d:<4} λ={result.lambda_theory:<6g} "
            f"llc={result.llc_ref:7.3f} ± {result.se_ref:.3f} R-hat={result.rhat:.3f} "
            f"div={result.divergences:<4} {result.runtime_sec:6.1f} s",
            flush=True,
        )
    if not runs:
        return {"name": name, "n": n, "runs": [], "refused_seeds": refused}
    llcs = [r["llc_ref"] for r in runs]
    lam = runs[0]["lambda_theory"]
    warm = runs[1:] or runs  # seed ≥ 1 reuse the compiled kernels: throughput without compile
    hmc_rate = sum(r["grad_evals"] for r in warm) / sum(r["runtime_sec"] for r in warm)
    bare_rate = bare_grad_throughput(problem, config)
    summary = {
        "name": name,
        "n": n,
        "d": runs[0]["d"],
        "lambda_theory": lam,
        "llc_mean": statistics.fmean(llcs),
        "relative_bias": (statistics.fmean(llcs) - lam) / lam,
        "seed_spread_sd": statistics.stdev(llcs) if len(llcs) > 1 else None,
        "wbic_scale": math.sqrt(lam * runs[0]["beta"] / 2),
        "max_rhat": max(r["rhat"] for r in runs),
        "divergences": sum(r["divergences"] for r in runs),
        "runtime_sec": sum(r["runtime_sec"] for r in runs),
        "hmc_grads_per_sec": hmc_rate,
        "bare_grads_per_sec": bare_rate,
        "bare_single_chain_grads_per_sec": bare_grad_throughput(problem, config, False),
        "runs": runs,
        "refused_seeds": refused,
    }
    sd = summary["seed_spread_sd"]
    print(
        f"== {name} n={n}: λ={lam:g} mean={summary['llc_mean']:.3f} "
        f"bias={100 * summary['relative_bias']:+.1f}% "
        f"spread={sd if sd is None else round(sd, 3)} "
        f"(√(λβ/2)={summary['wbic_scale']:.3f}) HMC/bare grads/s="
        f"{hmc_rate:.0f}/{bare_rate:.0f} ({hmc_rate / bare_rate:.2f}×)",
        flush=True,
    )
    return summary


if __name__ == "__main__":
    sys.exit(main())
