"""What an HMC reference costs as the parameters grow, and what sharding its chains buys.

    .venv/bin/python benchmarks/reference_scaling.py --problems benchmarks/reference_scaling.yaml \
        --shards-problem benchmarks/reference_scaling_shards.yaml   # docs/benchmarks.md
    .venv/bin/python benchmarks/reference_scaling.py --problems digits --warmup 200 --draws 200
    .venv/bin/python benchmarks/reference_scaling.py --shards-problem examples/my_model.yaml

Part 1, per problem of ``--problems`` (default: the ``digits`` preset, 1 210 to 9 610
parameters), in this process: the time to build the problem (train w*, check it), the
time of one full-data gradient, and one NUTS reference of 4 chains × (``--warmup`` +
``--draws``) at the default target acceptance: wall time, gradient evaluations, ESS, ESS
per second, R-hat and the verdict. The cost exponent in d is the least-squares slope of
log(wall time) and of log(gradient evaluations) against log d.

Part 2 (``--shards-problem``): ``python flows/reference.py --shards k`` for k = 1, 2, 4 on
the local Dask cluster (``LAMBDA_HAT_CLUSTER__*``; 2 workers by default), each with its own
artifacts directory, so nothing is cached between them: wall time of the command and the
pooled reference. On 2 cores the speed-up is bounded by the 2 workers; on a cluster each
shard is its own job.

Results: ``benchmarks/results/reference_scaling.json`` (or ``--out``); summarised in
docs/benchmarks.md. A long run belongs in the background: at 9 610 parameters a single
reference of 4 × (100 + 100) draws took 16 minutes on 2 cores (the digits ladder, 25 in all).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from lambda_hat.io import atomic_write_json
from lambda_hat.problems.posterior import empirical_loss
from lambda_hat.problems.specs import load_problem_set
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "reference_scaling.json"


def gradient_seconds(problem, repeats: int = 20) -> float:
    grad = jax.jit(jax.grad(empirical_loss), static_argnames="arch")
    data = problem.full_batch_data
    grad(problem.w_star, data, problem.arch).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        grad(problem.w_star, data, problem.arch).block_until_ready()
    return (time.perf_counter() - start) / repeats


def one_problem(spec, config: ReferenceConfig) -> dict:
    start = time.perf_counter()
    problem = build_problem(spec)
    built = time.perf_counter() - start
    per_gradient = gradient_seconds(problem)
    result = run(problem, config)
    row = {
        "name": spec.name, "d": problem.d, "n": problem.n, "build_sec": built,
        "gradient_sec": per_gradient, "reference_sec": result.runtime_sec,
        "grad_evals": result.grad_evals, "ess": result.ess,
        "ess_per_sec": result.ess / result.runtime_sec, "rhat": result.rhat,
        "llc_ref": result.llc_ref, "se_ref": result.se_ref, "quality": result.quality,
        "step_size_mean": result.step_size_mean,
    }  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def slope(rows: list[dict], field: str) -> float | None:
    if len(rows) < 2:
        return None
    x = np.log([row["d"] for row in rows])
    y = np.log([row[field] for row in rows])
    return float(np.polyfit(x, y, 1)[0])


def sharded(problems: str, warmup: int, draws: int, shards: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "LAMBDA_HAT_ARTIFACTS_DIR": f"{scratch}/artifacts",
               "LAMBDA_HAT_RESULTS_DIR": f"{scratch}/results"}  # fmt: skip
        argv = [
            sys.executable, str(REPO / "flows" / "reference.py"), "--problems", problems,
            "--num-warmup", str(warmup), "--num-draws", str(draws), "--shards", str(shards),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(argv, env=env, cwd=REPO, check=True, capture_output=True)
        wall = time.perf_counter() - start
        refs = [
            json.loads(p.read_text()) for p in Path(scratch).glob("artifacts/problems/*/ref.json")
        ]
    row = {"shards": shards, "wall_sec": wall,
           "references": [{k: ref[k] for k in ("name", "llc_ref", "se_ref", "rhat", "quality",
                                                "runtime_sec")} for ref in refs]}  # fmt: skip
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", default="digits")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--shards-problem", default=None, help="a problem set for part 2")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    config = ReferenceConfig(num_warmup=args.warmup, num_draws=args.draws, chunk_size=50)
    rows = [] if args.problems == "none" else [
        one_problem(spec, config) for spec in load_problem_set(args.problems).problems
    ]  # fmt: skip
    shards = [sharded(args.shards_problem, args.warmup, args.draws, k)
              for k in (1, 2, 4)] if args.shards_problem else []  # fmt: skip
    atomic_write_json(args.out, {
        "command": " ".join(sys.argv), "machine": platform.node(), "cpus": os.cpu_count(),
        "config": config.model_dump(mode="json"), "problems": rows,
        "exponent_wall_time": slope(rows, "reference_sec"),
        "exponent_grad_evals": slope(rows, "grad_evals"),
        "exponent_gradient_cost": slope(rows, "gradient_sec"),
        "sharding": shards,
        "speedup_4_shards": shards[0]["wall_sec"] / shards[-1]["wall_sec"] if shards else None,
    })  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
