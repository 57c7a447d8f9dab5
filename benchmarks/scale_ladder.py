"""Recipes up a scale ladder: tuned on the smallest rungs, run on every larger one.

    .venv/bin/python benchmarks/scale_ladder.py     # hours on 2 cores: run it in the background

On the ``dln-ladder`` preset (``--problems``; 48 to 9 600 parameters), in this process
and a pool of 2 worker processes:

1. **Yardsticks.** Each rung's NUTS reference (4 chains × (``--reference-warmup`` 300 +
   ``--reference-draws`` 600)) where d ≤ ``--reference-max-d`` (default 1 000), and its
   closed-form λ where the family has one. On the rungs with both, the finite-n gap
   (reference − λ)/λ, reported beside every λ-scored number. A rung with neither (a
   classifier above the cutoff) is refused in one line before anything runs.
2. **Recipes.** For SGLD and pSGLD in each step-size unit (``absolute``, ``per_nbeta``,
   ``per_curvature``: η0 = step / (nβ·h)) and for MCLMC (its own units), one recipe study
   across the ``--tune-rungs`` (2) smallest rungs: ``--trials`` (12) trials × ``--repeats``
   (2), the ``--sampler`` (tpe), judged by the mean relative error against the references.
3. **Transfer.** The recipe's best configuration on every rung on ``--fresh-seeds`` (8)
   fresh seeds: relative error |llc_hat − y|/y against the reference y (λ above the
   cutoff), mean with its 95 % t interval, and the signed bias (llc_hat − y)/y with its own.

A second ladder, real classifiers without a closed-form λ (1 210, 3 610 and 9 610
parameters, NUTS references on every rung, recipes tuned on the smallest)::

    .venv/bin/python benchmarks/scale_ladder.py --problems digits --tune-rungs 1 \
        --reference-max-d 10000 --reference-warmup 100 --reference-draws 100 \
        --out benchmarks/results/scale_ladder_digits.json

pSGLD alone on that ladder, against the yardsticks of the run above (no NUTS rerun)::

    .venv/bin/python benchmarks/scale_ladder.py --problems digits --tune-rungs 1 \
        --methods psgld --yardsticks-from benchmarks/results/scale_ladder_digits.json \
        --out benchmarks/results/scale_ladder_digits_psgld.json

Target (issue "Recipes that survive scale"): SGLD and pSGLD transfer error ≤ 10 % on every
rung up to about 10⁴ parameters. Results: ``benchmarks/results/scale_ladder.json``
(rewritten after each recipe); docs/benchmarks.md summarises them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import optuna
from pydantic import ValidationError
from tuning_honesty import (  # (beside this script: python benchmarks/scale_ladder.py)
    BUDGET_SEC,
    _problem,
    _run,
    first_done,
    group_submitter,
    judge_against,
    worker_pool,
)

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.io import atomic_write_json, read_json
from lambda_hat.problems.specs import (
    ProblemSpec,
    SpecError,
    format_validation_error,
    load_problem_set,
)
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run as run_reference
from lambda_hat.tuning.driver import Driver
from lambda_hat.tuning.kinds import Member, Recipe
from lambda_hat.tuning.search_space import FloatParam, MethodSpace, load_methods
from lambda_hat.tuning.stats import t_interval
from lambda_hat.tuning.storage import open_study
from lambda_hat.tuning.validation import run_all, top_configurations, validation_plans

# Each unit's step-size range: per nβ as recipe studies search it; per curvature a step
# s/(nβ·h) is stable below about s = 2, and the config caps step_size at 1.
STEP_RANGES = {"absolute": None, "per_nbeta": (1.0e-4, 1.0), "per_curvature": (1.0e-3, 1.0)}


def recipe_arms(methods: list[str]) -> list[tuple[str, str, MethodSpace]]:
    """(method, unit, space) of every recipe study: SGLD and pSGLD in each unit, MCLMC once."""
    defaults = load_methods()
    arms = []
    for method in methods:
        space = defaults[method]
        if method not in ("sgld", "psgld"):
            arms.append((method, "own", space))
            continue
        for unit, step_range in STEP_RANGES.items():
            step = space.space["step_size"]
            if step_range is not None:
                step = FloatParam(type="float", low=step_range[0], high=step_range[1], log=True)
            arms.append((method, unit, MethodSpace(
                method=method, fixed={**space.fixed, "step_size_scale": unit},
                space={**space.space, "step_size": step},
            )))  # fmt: skip
    return arms


def yardstick(spec: ProblemSpec, reference) -> dict[str, Any]:
    """What a rung's estimates are scored against: the reference where there is one."""
    lam = _problem(spec.model_dump_json()).lambda_theory
    lam = float(lam.lam) if lam is not None else None
    if reference is not None:
        gap = (reference.llc_ref - lam) / lam if lam else None
        return {"value": reference.llc_ref, "se": reference.se_ref, "kind": "reference",
                "lambda": lam, "finite_n_gap": gap}  # fmt: skip
    return {"value": lam, "se": 0.0, "kind": "lambda", "lambda": lam, "finite_n_gap": None}


def ladder_rungs(path: Path) -> dict[str, dict[str, Any]]:
    """Rung name → its row (``d``, ``yardstick``) in an earlier result of this script;
    ValueError when the file is missing or is not one."""
    earlier = read_json(path)
    if not isinstance(earlier, dict) or "results" not in earlier:
        raise ValueError(f"{path} is not a scale_ladder.py result")
    return {r["rung"]: r for arm in earlier["results"] for r in arm["rungs"]}


def earlier_yardsticks(
    found: dict[str, dict[str, Any]], rungs: list[ProblemSpec], problems
) -> dict[str, dict]:
    """Each rung's yardstick (by pid) from an earlier run on the same ladder (``found``, from
    ``ladder_rungs``; its NUTS references cost most of an hour on the digits ladder):
    matched by rung name and d; ValueError when a rung is missing or its size differs."""
    yards = {}
    for spec in rungs:
        rung = found.get(spec.name)
        if rung is None or rung["d"] != problems[spec.pid].d:
            raise ValueError(f"no rung {spec.name} of d={problems[spec.pid].d}")
        yards[spec.pid] = rung["yardstick"]
    return yards


def summary(values: list[float], non_negative: bool = False) -> dict[str, Any]:
    """Mean with its 95 % t interval (clipped at 0 for an |error|, never negative)."""
    interval = t_interval(values)
    if interval is not None and non_negative:
        interval = (max(interval[0], 0.0), interval[1])
    return {
        "mean": statistics.fmean(values) if values else None,
        "ci95": list(interval) if interval else None,
        "n": len(values),
    }


def transfer(pool, spec: ProblemSpec, yard: dict[str, Any], method: str, space: MethodSpace,
             best, fresh: int, unit: str) -> dict[str, Any]:  # fmt: skip
    """The recipe on one rung, on the fresh seeds: relative error and bias with intervals."""
    member = Member(spec.pid, spec.name, yard["value"], yard["se"])
    plans = validation_plans(
        [best], space, study_name=f"ladder:{method}:{unit}", pids=[spec.pid], method=method,
        seeds=fresh, budget_sec=BUDGET_SEC,
    )  # fmt: skip
    runs = run_all(
        plans, submit_group=group_submitter(pool, spec.model_dump_json(), method),
        first_done=first_done, judge=judge_against(member),
    )  # fmt: skip
    hats = [run.result["llc_hat"] for run in runs if run.abs_error is not None]
    return {
        "rung": spec.name,
        "d": _problem(spec.model_dump_json()).d,
        "yardstick": yard,
        "rel_error": summary([abs(h - yard["value"]) / yard["value"] for h in hats], True),
        "rel_bias": summary([(h - yard["value"]) / yard["value"] for h in hats]),
        "failed": len(runs) - len(hats),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="dln-ladder")
    parser.add_argument("--methods", nargs="+", default=["sgld", "psgld", "mclmc"])
    parser.add_argument("--tune-rungs", type=int, default=2)
    parser.add_argument("--reference-max-d", type=int, default=1000)
    parser.add_argument("--reference-warmup", type=int, default=300)
    parser.add_argument("--reference-draws", type=int, default=600)
    parser.add_argument(
        "--yardsticks-from",
        type=Path,
        default=None,
        help="reuse the yardsticks of an earlier results file of this ladder",
    )
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--fresh-seeds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale_ladder.json"))
    args = parser.parse_args(argv)
    try:
        reference_config = ReferenceConfig(num_warmup=args.reference_warmup,
                                           num_draws=args.reference_draws)  # fmt: skip
        problem_set = load_problem_set(args.problems)
        found = ladder_rungs(args.yardsticks_from) if args.yardsticks_from else None
    except ValidationError as error:
        field = str(error.errors()[0]["loc"][0])
        flag = {"num_draws": "--reference-draws", "num_warmup": "--reference-warmup"}[field]
        parser.error(f"{flag}: {format_validation_error(error).removeprefix(field + ': ')}")
    except SpecError as error:
        parser.error(f"--problems: {error}")
    except ValueError as error:
        parser.error(f"--yardsticks-from: {error}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    enable_compilation_cache()
    rungs = problem_set.problems
    problems = {spec.pid: _problem(spec.model_dump_json()) for spec in rungs}
    for spec in rungs:
        problem = problems[spec.pid]
        no_reference = args.yardsticks_from is None and problem.d > args.reference_max_d
        if no_reference and problem.lambda_theory is None:
            print(
                f"{spec.name}: no closed-form λ and d={problem.d} > --reference-max-d "
                f"{args.reference_max_d}: nothing to score it against",
                file=sys.stderr,
            )
            return 2
    if found is not None:
        try:
            yards = earlier_yardsticks(found, rungs, problems)
        except ValueError as error:
            print(f"--yardsticks-from: {args.yardsticks_from}: {error}", file=sys.stderr)
            return 2
    else:
        yards = {}
        for spec in rungs:
            problem = problems[spec.pid]
            reference = None
            if problem.d <= args.reference_max_d:
                reference = run_reference(problem, reference_config)
            yards[spec.pid] = yardstick(spec, reference)
    for spec in rungs:
        print(f"{spec.name}: d={problems[spec.pid].d}, yardstick {yards[spec.pid]}", flush=True)
    tuned_on = rungs[: args.tune_rungs]
    members = [Member(s.pid, s.name, yards[s.pid]["value"], yards[s.pid]["se"]) for s in tuned_on]
    specs = {s.pid: s.model_dump_json() for s in tuned_on}
    results: list[dict[str, Any]] = []
    with worker_pool() as pool:
        for method, unit, space in recipe_arms(args.methods):
            study = open_study("sqlite:///:memory:", f"recipe-ladder:{method}:{unit}",
                               sampler=args.sampler)  # fmt: skip
            Driver(
                study, space, method=method, members=members, budget_sec=BUDGET_SEC,
                kind=Recipe(Path(args.problems).stem), repeats=args.repeats, pruner="none",
                sampler=args.sampler,
            ).run(
                args.trials, batch=2, first_done=first_done,
                submit=lambda plan, m=method: pool.submit(
                    _run, specs[plan.pid], m, plan.config, plan.seed
                ),
            )  # fmt: skip
            (best,) = top_configurations(study, 1)
            rows = [transfer(pool, spec, yards[spec.pid], method, space, best,
                             args.fresh_seeds, unit) for spec in rungs]  # fmt: skip
            results.append({"method": method, "unit": unit, "recipe": best.hyperparams,
                            "search_objective": best.search_objective, "rungs": rows})  # fmt: skip
            print(_line(results[-1]), flush=True)
            atomic_write_json(args.out, {"args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()},
                                         "tuned_on": [s.name for s in tuned_on],
                                         "results": results})  # fmt: skip
    return 0


def _line(result: dict[str, Any]) -> str:
    def cell(row: dict[str, Any]) -> str:
        error = row["rel_error"]
        if error["mean"] is None:
            return f"{row['rung']}: failed"
        ci = error["ci95"]
        interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else ""
        mark = "λ" if row["yardstick"]["kind"] == "lambda" else "ref"
        return f"{row['rung']} ({mark}) {100 * error['mean']:.1f} %{interval}"

    return f"{result['method']:6s} {result['unit']:13s} " + " | ".join(
        cell(row) for row in result["rungs"]
    )


if __name__ == "__main__":
    sys.exit(main())
