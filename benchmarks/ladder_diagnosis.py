"""Why does a ladder recipe miss? The scale ladder's SGLD recipes rerun with a few
hyperparameters changed, rung by rung.

    .venv/bin/python benchmarks/ladder_diagnosis.py      # after benchmarks/scale_ladder.py

Reads ``benchmarks/results/scale_ladder.json`` (``--ladder``): for each SGLD arm in
``--units`` (per_nbeta, per_curvature), its recipe runs on the ``--rungs`` as tuned and
with each of ``--variants`` (``key=value[,key=value]``; by default 4× the steps, and 16×
the batch), on ``--seeds`` (4) seeds the ladder never used, scored against the same
yardstick (reference or λ). Reported per (unit, rung, variant): the relative bias
(llc_hat − y)/y, mean with its 95 % t interval. Two causes, two signatures:

* a chain still drifting towards its stationary law (too few steps for the flat
  directions): the bias shrinks with more steps;
* minibatch gradient noise, whose variance per step grows like η²(nβ)²/b while Langevin
  noise is η (so under per-nβ steps like nβ/b): a hot chain, a positive bias that shrinks
  with a larger batch.

Results: ``benchmarks/results/ladder_diagnosis.json``; docs/benchmarks.md summarises them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from scale_ladder import summary  # (beside this script: python benchmarks/ladder_diagnosis.py)
from tuning_honesty import _run, worker_pool

from lambda_hat.io import atomic_write_json, read_json
from lambda_hat.problems.specs import load_problem_set
from lambda_hat.tuning.search_space import load_methods

SEEDS_FROM = 9001  # the ladder's fresh seeds hash its study names (none is 9001 to 9004)
BUDGET_SEC = 1800.0  # no run may stop short of its steps: the question is their number


def variant(text: str) -> dict[str, int | float]:
    """``key=value[,key=value...]`` on the command line: the hyperparameters one variant
    changes together (e.g. ``num_steps=24000,batch_size=4096``)."""
    change: dict[str, int | float] = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        try:
            number = int(value) if value.isdigit() else float(value)
        except ValueError:
            number = None
        if not key or number is None or not math.isfinite(number):
            raise argparse.ArgumentTypeError(
                f"{pair!r}: give key=<finite number>, e.g. num_steps=12000"
            )
        change[key] = number
    return change


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ladder", type=Path, default=Path("benchmarks/results/scale_ladder.json"))
    parser.add_argument("--problems", default="dln-ladder", help="a preset or a YAML file")
    parser.add_argument(
        "--rungs", nargs="+", default=["ladder_d3_w8_n1m", "ladder_d5_w12", "ladder_d6_w20"]
    )
    parser.add_argument("--units", nargs="+", default=["per_nbeta", "per_curvature"])
    parser.add_argument(
        "--variants", nargs="+", type=variant, default=[{"num_steps": 12000}, {"batch_size": 4096}]
    )
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/ladder_diagnosis.json")
    )
    args = parser.parse_args(argv)
    ladder = read_json(args.ladder)
    problems = load_problem_set(args.problems).problems
    specs = {spec.name: spec.model_dump_json() for spec in problems}
    fixed = load_methods()["sgld"].fixed
    seeds = list(range(SEEDS_FROM, SEEDS_FROM + args.seeds))
    rows: list[dict[str, Any]] = []
    with worker_pool() as pool:
        for arm in ladder["results"]:
            if arm["method"] != "sgld" or arm["unit"] not in args.units:
                continue
            for rung in (r for r in arm["rungs"] if r["rung"] in args.rungs):
                y = rung["yardstick"]["value"]
                for change in [{}, *args.variants]:
                    config = {**fixed, **arm["recipe"], "step_size_scale": arm["unit"], **change}
                    futures = [pool.submit(_run, specs[rung["rung"]], "sgld", config, s, BUDGET_SEC)
                               for s in seeds]  # fmt: skip
                    results = [f.result() for f in futures]
                    hats = [r["llc_hat"] for r in results if r["llc_hat"] is not None]
                    rows.append({
                        "unit": arm["unit"], "rung": rung["rung"], "d": rung["d"],
                        "yardstick": rung["yardstick"]["kind"], "change": change,
                        "ladder_bias": rung["rel_bias"]["mean"],
                        "rel_bias": summary([(h - y) / y for h in hats]),
                        "failed": len(seeds) - len(hats),
                        "statuses": sorted({r["status"] for r in results}),
                    })  # fmt: skip
                    print(rows[-1], flush=True)
                    atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()},
                                                 "rows": rows})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
