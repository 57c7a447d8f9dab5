"""Where pSGLD's RMSProp second moment V starts, and what it does to the LLC estimate.

    .venv/bin/python benchmarks/psgld_start.py      # about 10 minutes on 2 cores

pSGLD's preconditioner is G = 1/(δ + √V). On each rung of the ``digits`` ladder, the
pSGLD recipe of an earlier ladder run (``--ladder``, its ``--unit`` arm, tuned on the
smallest rung with the first start) on ``--seeds`` (4) seeds, from four starts:

- ``gradient alone``: V0 = (nβ·∇L_n(w*))², the first start (≈ 0 on a net that fits its
  rows);
- ``b-row batch``: V0 = (nβ)²·(∇L_n(w*)² + diag(C)/b), the expected square of the first
  step's minibatch gradient at w* (diag(C) the per-coordinate variance over rows of one
  row's gradient): what ``lambda_hat.samplers.sgld`` does now;
- ``one row``: V0 = (nβ)²·(∇L_n(w*)² + diag(C)), one row's mean squared gradient, b times
  the second term: a more cautious G;
- ``b-row batch, frozen``: the b-row start with α = 0.999999, so V barely moves: a
  constant preconditioner, under which Langevin dynamics has the right stationary law
  (pSGLD omits the Γ correction a moving V needs).

Reported per (rung, start): the relative bias (llc_hat − y)/y against the rung's yardstick
y from the same ladder file, mean with its 95 % t interval. Results:
``benchmarks/results/psgld_start.json``; docs/benchmarks.md summarises them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from scale_ladder import earlier_yardsticks, ladder_rungs
from tuning_honesty import _problem  # (beside this script: python benchmarks/psgld_start.py)

from lambda_hat.io import atomic_write_json, read_json
from lambda_hat.problems.specs import load_problem_set
from lambda_hat.samplers.run_method import run_trial
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.stats import t_interval

# (name, factor on the problem's diag(C), change). The sampler divides diag(C) by b itself:
# a factor 0 is the first start, 1 the b-row batch's, b one row's.
STARTS = [
    ("gradient alone", lambda b: 0.0, {}),
    ("b-row batch", lambda b: 1.0, {}),
    ("one row", lambda b: float(b), {}),
    ("b-row batch, frozen", lambda b: 1.0, {"rmsprop_alpha": 0.999999}),
]


def recipe(ladder: dict[str, Any], unit: str) -> dict[str, Any]:
    (arm,) = [a for a in ladder["results"] if a["method"] == "psgld" and a["unit"] == unit]
    return {**load_methods()["psgld"].fixed, **arm["recipe"], "step_size_scale": unit}


def bias_row(problem, config: dict[str, Any], yard: float, seeds: int) -> dict[str, Any]:
    runs = [run_trial(problem, "psgld", config, budget_sec=None, seed=10_000 + s)
            for s in range(seeds)]  # fmt: skip
    biases = [(r.llc_hat - yard) / yard for r in runs if r.status == "ok"]
    interval = t_interval(biases)
    return {
        "rel_bias": statistics.fmean(biases) if biases else None,
        "ci95": list(interval) if interval else None,
        "n": len(biases),
        "failed": len(runs) - len(biases),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ladder", type=Path,
                        default=Path("benchmarks/results/scale_ladder_digits.json"))  # fmt: skip
    parser.add_argument("--problems", default="digits", help="a preset or a YAML file")
    parser.add_argument("--unit", default="per_nbeta",
                        choices=["absolute", "per_nbeta", "per_curvature"])  # fmt: skip
    parser.add_argument("--seeds", type=int, default=4, choices=range(2, 65), metavar="2..64")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/psgld_start.json"))
    args = parser.parse_args(argv)
    try:
        found = ladder_rungs(args.ladder)
    except ValueError as error:
        parser.error(f"--ladder: {error}")
    config = recipe(read_json(args.ladder), args.unit)
    rungs = load_problem_set(args.problems).problems
    problems = {spec.pid: _problem(spec.model_dump_json()) for spec in rungs}  # (cached)
    try:
        yards = earlier_yardsticks(found, rungs, problems)
    except ValueError as error:
        print(f"--ladder: {args.ladder}: {error}", file=sys.stderr)
        return 2
    rows = []
    for spec in rungs:
        problem = problems[spec.pid]
        for start, factor, change in STARTS:
            variance = problem.gradient_noise_variance
            problem.__dict__["gradient_noise_variance"] = factor(config["batch_size"]) * variance
            try:
                row = bias_row(problem, {**config, **change}, yards[spec.pid]["value"],
                               args.seeds)  # fmt: skip
            finally:
                problem.__dict__["gradient_noise_variance"] = variance
            rows.append({"rung": spec.name, "d": problem.d, "start": start, **row})
            print(f"{spec.name:12s} {start:22s} rel bias {row['rel_bias']:+.3f} "
                  f"{row['ci95']}", flush=True)  # fmt: skip
            atomic_write_json(args.out, {"args": {**vars(args), "ladder": str(args.ladder),
                                                  "out": str(args.out)},
                                         "recipe": config, "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
