"""Does the minibatch heat η·(nβ)²·tr(C)/(8b) predict what a batch does to SGLD's LLC?

    .venv/bin/python benchmarks/heat_check.py       # after benchmarks/ladder_diagnosis.py

Reads ``benchmarks/ladder_diagnosis*.json`` (``--diagnoses``): rows of the scale ladder's
SGLD recipes on its rungs, as tuned (batch 256) and with a larger batch (4 096). For each
pair of rows that differ in the batch alone, the measured change of the relative bias
(mean over 4 seeds, 95 % t interval from both rows' intervals) against the predicted one:
the heat of each batch, relative to the rung's yardstick, at the step size averaged over
the kept draws (the decay lowers it, and the stiff directions that carry the heat follow
it within a few steps). Seconds on 2 cores: only tr(C) is computed (4 096 rows per rung).

Results: ``benchmarks/results/heat_check.json``; docs/benchmarks.md summarises them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tuning_honesty import _problem  # (beside this script: python benchmarks/heat_check.py)

from lambda_hat.io import atomic_write_json, read_json
from lambda_hat.problems.gradient_noise import minibatch_heat
from lambda_hat.problems.specs import load_problem_set
from lambda_hat.samplers.configs import SGLDConfig, parse_method_config
from lambda_hat.samplers.sgld import batch_size_for, initial_step
from lambda_hat.tuning.search_space import load_methods


def mean_decay(config: SGLDConfig) -> float:
    """The step size's mean factor (1 + t/t0)^(−p) over the kept steps."""
    steps = np.arange(round(config.burn_in_frac * config.num_steps), config.num_steps)
    return float(np.mean((1.0 + steps / config.decay_t0) ** -config.decay_exponent))


def predicted_heat(problem, config: SGLDConfig) -> float:
    """The heat of ``config`` on ``problem`` in LLC units, over the kept draws."""
    eta = initial_step(config, problem.n_beta, problem.hessian_max_eig) * mean_decay(config)
    batch = batch_size_for(problem, config)
    return minibatch_heat(eta, problem.n_beta, problem.gradient_noise_trace, batch)


def recipe_config(ladder: dict, unit: str, change: dict) -> SGLDConfig:
    (arm,) = [a for a in ladder["results"] if a["method"] == "sgld" and a["unit"] == unit]
    fixed = load_methods()["sgld"].fixed
    config = {**fixed, **arm["recipe"], "step_size_scale": unit, **change}
    return parse_method_config("sgld", config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ladder", type=Path, default=Path("benchmarks/results/scale_ladder.json"))
    parser.add_argument("--problems", default="dln-ladder", help="a preset or a YAML file")
    parser.add_argument("--diagnoses", nargs="+", type=Path, default=[
        Path("benchmarks/results/ladder_diagnosis.json")])  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/heat_check.json"))
    args = parser.parse_args(argv)
    ladder = read_json(args.ladder)
    specs = {spec.name: spec for spec in load_problem_set(args.problems).problems}
    yards = {r["rung"]: r["yardstick"]["value"] for a in ladder["results"] for r in a["rungs"]}
    rows = [row for path in args.diagnoses for row in read_json(path)["rows"]]
    pairs: list[dict[str, Any]] = []
    for base in (row for row in rows if not row["change"]):
        for other in rows:
            change = other["change"]
            if (other["unit"], other["rung"]) != (base["unit"], base["rung"]) or set(change) != {
                "batch_size"
            }:
                continue
            problem = _problem(specs[base["rung"]].model_dump_json())
            y = yards[base["rung"]]
            heats = [predicted_heat(problem, recipe_config(ladder, base["unit"], c)) / y
                     for c in ({}, change)]  # fmt: skip
            measured = other["rel_bias"]["mean"] - base["rel_bias"]["mean"]
            half = math.hypot(*(np.diff(r["rel_bias"]["ci95"])[0] / 2 for r in (base, other)))
            pairs.append({
                "unit": base["unit"], "rung": base["rung"], "d": base["d"],
                "batch": [recipe_config(ladder, base["unit"], {}).batch_size, change["batch_size"]],
                "gradient_noise_trace": problem.gradient_noise_trace,
                "predicted_heat": heats, "predicted_change": heats[1] - heats[0],
                "measured_change": measured, "measured_ci95": [measured - half, measured + half],
            })  # fmt: skip
            p = pairs[-1]
            print(f"{p['unit']:13s} {p['rung']:18s} predicted {100 * p['predicted_change']:+.0f} %"
                  f"  measured {100 * measured:+.0f} % [{100 * (measured - half):+.0f}, "
                  f"{100 * (measured + half):+.0f}]", flush=True)  # fmt: skip
    atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()},
                                 "pairs": pairs})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
