"""The HMC reference against the exact finite-n LLC (lambda_hat.problems.exact) of small RRRs.

    .venv/bin/python benchmarks/reference_exact.py            # 72 cases, ~10 min on 2 cores

Cases: reduced-rank regressions whose first layer has H·M ≤ 2 (M-H-N = 1-2-3 and 2-1-3),
teacher ranks 0 and 1, n = 1e3, 1e4, 1e5, γ = 1 and 10, data seeds 0–2. For each, the
reference the tune flow computes (flows/reference.py's DEFAULT_REFERENCE unless options
say otherwise) and the oracle; z = (llc_ref − exact) / se_ref. Targets for the default
reference: |z| ≤ 2 in at least 95 % of cases, mean z within ±0.3, every relative error
within 3 %. Results: ``benchmarks/results/reference_exact.json`` (every case) and a
summary on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.io import atomic_write_json
from lambda_hat.problems.exact import exact_llc
from lambda_hat.problems.optimum import OptimumError
from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run as run_reference

SHAPES = [(1, 2, 3), (2, 1, 3)]


def spec_for(shape, rank: int, n: int, gamma: float, seed: int) -> ProblemSpec:
    m, h, out = shape
    return ProblemSpec.model_validate(
        {
            "name": f"rrr_{m}_{h}_{out}_r{rank}_n{n}_g{gamma:g}_s{seed}".replace(".", "p"),
            "model": {"family": "rrr", "m_in": m, "hidden": h, "n_out": out},
            "teacher": {"rank": rank},
            "data": {"n": n},
            "posterior": {"gamma": gamma},
            # The oracle and HMC sample the same posterior whatever w* is; a rank-0 fit
            # of noise at n = 1e5 can sit on a flat saddle (relative eigenvalue ~1e-5).
            "optimum": {"saddle_tol": 1e-4},
            "seed": seed,
        }
    )


def main(argv: list[str] | None = None) -> int:
    from flows.reference import DEFAULT_REFERENCE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--gamma", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, default=3)
    for name in ("num_warmup", "num_draws", "num_chains"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=None)
    parser.add_argument("--target-accept", type=float, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reference_exact.json"))
    args = parser.parse_args(argv)
    enable_compilation_cache()
    overrides = {
        key: getattr(args, key)
        for key in ("num_warmup", "num_draws", "num_chains", "target_accept")
        if getattr(args, key) is not None
    }
    config = DEFAULT_REFERENCE.model_copy(update=overrides)
    config = ReferenceConfig.model_validate(config.model_dump())
    print(f"reference config: {config.model_dump(mode='json')}", flush=True)
    cases = []
    grid = itertools.product(SHAPES, args.ranks, args.n, args.gamma, range(args.seeds))
    for shape, rank, n, gamma, seed in grid:
        spec = spec_for(shape, rank, n, gamma, seed)
        try:
            problem = build_problem(spec, cache_dir=Path("results/targets"))
        except OptimumError as error:  # recorded, not fatal: the other cases still run
            print(f"{spec.name}: skipped ({error})", flush=True)
            cases.append({"name": spec.name, "skipped": str(error)})
            continue
        started = time.perf_counter()
        exact = exact_llc(problem)
        oracle_sec = time.perf_counter() - started
        ref = run_reference(problem, config)
        z = (ref.llc_ref - exact) / ref.se_ref
        case = {
            "name": spec.name, "shape": shape, "rank": rank, "n": n, "gamma": gamma,
            "seed": seed, "exact": exact, "llc_ref": ref.llc_ref, "se_ref": ref.se_ref,
            "z": z, "rel_error": (ref.llc_ref - exact) / exact, "lambda": ref.lambda_theory,
            "divergences": ref.divergences, "transitions": ref.n_draws, "rhat": ref.rhat,
            "ess": ref.ess, "runtime_sec": ref.runtime_sec, "oracle_sec": oracle_sec,
            "grad_evals": ref.grad_evals, "quality_reasons": ref.quality_reasons,
            "quality": getattr(ref, "quality", None),
        }  # fmt: skip
        cases.append(case)
        print(
            f"{spec.name:28s} exact {exact:7.4f}  ref {ref.llc_ref:7.4f} ± {ref.se_ref:.4f}  "
            f"z {z:+5.2f}  rel {100 * case['rel_error']:+5.2f} %  div {ref.divergences:4d}  "
            f"R-hat {ref.rhat:.3f}  {ref.runtime_sec:4.1f} s",
            flush=True,
        )
        atomic_write_json(args.out, {"config": config.model_dump(mode="json"), "cases": cases})
    summary = summarize(cases)
    atomic_write_json(
        args.out, {"config": config.model_dump(mode="json"), "summary": summary, "cases": cases}
    )
    print(summary)
    return 0


def summarize(cases: list[dict]) -> dict:
    skipped = sum("skipped" in c for c in cases)
    cases = [c for c in cases if "skipped" not in c]
    zs = [c["z"] for c in cases]
    rel = [abs(c["rel_error"]) for c in cases]
    return {
        "cases": len(cases),
        "skipped": skipped,
        "mean_z": statistics.fmean(zs),
        "sd_z": statistics.stdev(zs) if len(zs) > 1 else None,
        "fraction_abs_z_le_2": sum(abs(z) <= 2 for z in zs) / len(zs),
        "worst_z": max(zs, key=abs),
        "max_abs_rel_error": max(rel),
        "median_divergences": statistics.median(c["divergences"] for c in cases),
        "max_divergences": max(c["divergences"] for c in cases),
        "mean_runtime_sec": statistics.fmean(c["runtime_sec"] for c in cases),
        "mean_grad_evals": statistics.fmean(c.get("grad_evals", 0) for c in cases),
        "verdicts": {
            q: sum(c.get("quality") == q for c in cases) for q in ("trusted", "warn", "untrusted")
        },
    }


if __name__ == "__main__":
    sys.exit(main())
