"""How fast each sampler's search learns: the validated error of its recommendation after
4, 8 and 16 trials, against a 32-trial random search, with and without a warm start.

    .venv/bin/python flows/tune.py --problems dln-family --recipe --methods sgld mclmc  # recipes
    .venv/bin/python benchmarks/search_efficiency.py \\
        --warm-start artifacts/recipes/dln-family-sgld.yaml artifacts/recipes/dln-family-mclmc.yaml

For each problem of ``--problems`` (default: the ``default`` preset, 4 problems) and each
method, with the problem's HMC reference (NUTS 4 × (300 + 600)), in this process and a
pool of 2 worker processes:

* one study per sampler (``--samplers``: tpe, qmc-tpe, random) of ``--trials`` (16) trials
  × ``--repeats`` (2) runs on common seeds, one trial at a time, no pruner (equal compute:
  every trial costs its repeats), and the same with the recipe of ``--warm-start`` as
  trial 0 where one is given;
* after 4, 8 and 16 trials, the best configuration so far (lowest search objective among
  the trials numbered below k) is validated on ``--fresh-seeds`` (8) fresh seeds, shared by
  every arm: its validated |error|, mean ± SE;
* the yardstick: a random search of 32 trials, its best validated the same way.

Every arm of a method searches one space: in a per-nβ recipe's step-size units when that
method's warm start is one (as a flow study warm-started from it would), cold arms too.

Target (issue "Recipes that survive scale"): with a warm start, 4 trials reach within 1.2×
the validated error of the 32-trial random search. Results:
``benchmarks/results/search_efficiency.json`` (rewritten after each problem and method);
docs/benchmarks.md summarises them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import optuna
from tuning_honesty import (  # (beside this script: python benchmarks/search_efficiency.py)
    BUDGET_SEC,
    _problem,
    _run,
    first_done,
    group_submitter,
    judge_against,
    worker_pool,
)

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.io import atomic_write_json
from lambda_hat.problems.specs import load_problem_set
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run as run_reference
from lambda_hat.tuning.driver import Driver
from lambda_hat.tuning.kinds import Member
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.storage import open_study
from lambda_hat.tuning.validation import Candidate, run_all, validation_plans
from lambda_hat.tuning.warm_start import WarmStart, campaign_warm_starts

CHECKPOINTS = (4, 8, 16)
YARDSTICK_TRIALS = 32


def best_before(study: optuna.Study, k: int) -> Candidate | None:
    """The best configuration among the study's first ``k`` trials (COMPLETE ones)."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.number < k and "config_id" in t.user_attrs
    ]
    if not complete:
        return None
    best = min(complete, key=lambda t: (t.value, t.number))
    return Candidate(best.user_attrs["config_id"], dict(best.params), best.number, best.value,
                     best.user_attrs.get("objective_se"))  # fmt: skip


class Validator:
    """Validated |error| of a configuration on the shared fresh seeds, once per config."""

    def __init__(self, pool, spec, method: str, member: Member, fresh: int, space):
        self.pool, self.spec, self.method, self.member = pool, spec, method, member
        self.fresh, self.space = fresh, space
        self.cache: dict[str, dict[str, Any]] = {}

    def submit(self, plan):
        return self.pool.submit(_run, self.spec.model_dump_json(), self.method, plan.config,
                                plan.seed)  # fmt: skip

    def __call__(self, candidate: Candidate | None) -> dict[str, Any] | None:
        if candidate is None:
            return None
        if candidate.config_id not in self.cache:
            plans = validation_plans(
                [candidate], self.space, study_name=f"{self.spec.pid}:{self.method}",
                pids=[self.spec.pid], method=self.method, seeds=self.fresh,
                budget_sec=BUDGET_SEC,
            )  # fmt: skip
            submit_group = group_submitter(self.pool, self.spec.model_dump_json(), self.method)
            runs = run_all(plans, submit_group=submit_group, first_done=first_done,
                           judge=judge_against(self.member))  # fmt: skip
            errors = [run.abs_error for run in runs if run.abs_error is not None]
            self.cache[candidate.config_id] = {
                "params": candidate.hyperparams,
                "mean": statistics.fmean(errors) if errors else None,
                "se": statistics.stdev(errors) / len(errors) ** 0.5 if len(errors) > 1 else None,
                "failed": len(runs) - len(errors),
            }
        return self.cache[candidate.config_id]


def search(validator: Validator, *, sampler: str, trials: int, repeats: int,
           warm_start: WarmStart | None, tag: str) -> dict[str, Any]:  # fmt: skip
    """One study of ``trials`` trials; its best after each checkpoint, validated."""
    name = f"{validator.spec.pid}:{validator.method}:{tag}"
    study = open_study("sqlite:///:memory:", name, sampler=sampler)
    driver = Driver(
        study, validator.space, method=validator.method, members=[validator.member],
        budget_sec=BUDGET_SEC, repeats=repeats, pruner="none", sampler=sampler,
        warm_start=warm_start,
    )  # fmt: skip
    driver.run(trials, batch=1, submit=validator.submit, first_done=first_done)
    checkpoints = [k for k in CHECKPOINTS if k < trials] + [trials]
    return {
        "sampler": sampler,
        "warm_start": warm_start is not None,
        "trials": trials,
        "validated": {k: validator(best_before(study, k)) for k in checkpoints},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="default")
    parser.add_argument("--methods", nargs="+", default=["sgld", "mclmc"])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "qmc-tpe", "random"])
    parser.add_argument("--trials", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fresh-seeds", type=int, default=8)
    parser.add_argument("--yardstick-trials", type=int, default=YARDSTICK_TRIALS)
    parser.add_argument("--warm-start", nargs="*", default=[], help="recipe files")
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/search_efficiency.json"))  # fmt: skip
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    enable_compilation_cache()
    # Every arm of a method searches the same space: in a per-nβ recipe's units where the
    # method's warm start is one (as a warm-started flow study would), cold arms included.
    spaces = {m: space for m, space in load_methods().items() if m in args.methods}
    starts: dict[str, WarmStart] = {}
    for path in args.warm_start:
        tuned, first_trials = campaign_warm_starts(path, spaces, list(spaces), recipe=False)
        for method, first_trial in first_trials.items():
            spaces[method] = tuned[method]
            starts[method] = WarmStart(**first_trial)
    results = []
    # spawn, not fork: the parent runs JAX (multithreaded) for the references.
    with worker_pool() as pool:
        for spec in load_problem_set(args.problems).problems:
            ref = run_reference(_problem(spec.model_dump_json()),
                                ReferenceConfig(num_warmup=300, num_draws=600))  # fmt: skip
            member = Member(spec.pid, spec.name, ref.llc_ref, ref.se_ref)
            for method in args.methods:
                validator = Validator(pool, spec, method, member, args.fresh_seeds, spaces[method])
                arms = [
                    search(validator, sampler=sampler, trials=args.trials, repeats=args.repeats,
                           warm_start=start, tag=f"{sampler}-{'warm' if start else 'cold'}")
                    for sampler in args.samplers
                    for start in ([None, starts[method]] if method in starts else [None])
                ]  # fmt: skip
                yardstick = search(
                    validator, sampler="random", trials=args.yardstick_trials,
                    repeats=args.repeats, warm_start=None, tag="yardstick",
                )  # fmt: skip
                row = {"problem": spec.name, "method": method, "llc_ref": ref.llc_ref,
                       "se_ref": ref.se_ref, "arms": arms, "yardstick": yardstick}  # fmt: skip
                results.append(row)
                print(_line(row), flush=True)
                atomic_write_json(args.out, {"args": vars(args) | {"out": str(args.out)},
                                             "results": results})  # fmt: skip
    return 0


def _line(row: dict[str, Any]) -> str:
    def pct(cell: dict[str, Any] | None) -> str:
        if cell is None or cell["mean"] is None:
            return "–"
        se = f" ± {100 * cell['se'] / row['llc_ref']:.1f}" if cell["se"] is not None else ""
        return f"{100 * cell['mean'] / row['llc_ref']:.1f}{se} %"

    arms = " | ".join(
        f"{arm['sampler']}{'+warm' if arm['warm_start'] else ''}: "
        + ", ".join(f"{k}→{pct(cell)}" for k, cell in arm["validated"].items())
        for arm in row["arms"]
    )
    final = list(row["yardstick"]["validated"].values())[-1]
    yardstick = f"random-{row['yardstick']['trials']}"
    return f"{row['problem']:16s} {row['method']:6s} {arms} | {yardstick}: {pct(final)}"


if __name__ == "__main__":
    sys.exit(main())
