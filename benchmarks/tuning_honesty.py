"""The winner's curse, measured: best-of-N single-seed errors against the same
configurations rerun on fresh seeds, and what repeats + validation choose instead.

    .venv/bin/python benchmarks/tuning_honesty.py          # ~25 min on 2 cores

For each (problem, method) of the default preset, with the HMC reference of the tune flow
(NUTS 4 × (300 + 600)), at equal search compute (``--search-runs`` runs, default 12):

* **single seed** (the pipeline before repeats): ``--search-runs`` trials of one run each;
  its *reported* error is the best trial's |llc_hat − llc_ref| (best of N);
* **repeats**: ``--search-runs / 3`` trials of 3 runs on common seeds with the Wilcoxon
  pruner (pruned trials free their runs for nothing: the budget counts trials, so a pruned
  trial is compute saved, reported as such);

then each pipeline's chosen configuration is rerun on the same ``--fresh-seeds`` fresh
seeds (default 8): its *validated* error, mean with its standard error. The ratio
validated / reported is the size of the winner's curse.

TPE against random search (``--race-problems``, default the first two problems): one
study per sampler of ``--race-trials`` trials × 3 repeats (Wilcoxon pruner); after every
trial the best configuration so far is validated on the fresh seeds (once per distinct
configuration), and the search runs spent until that validated error is within
2 × se_ref are reported (or "not reached"). Results go to
``benchmarks/results/tuning_honesty.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing
import signal
import statistics
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from functools import lru_cache
from pathlib import Path
from typing import Any

import optuna

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.io import atomic_write_json
from lambda_hat.problems.specs import ProblemSpec, load_problem_set
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run as run_reference
from lambda_hat.samplers.run_method import run_trial
from lambda_hat.tuning.driver import Driver
from lambda_hat.tuning.kinds import Member, PerProblem
from lambda_hat.tuning.pruning import make_pruner
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.storage import open_study
from lambda_hat.tuning.validation import run_all, top_configurations, trial_counts, validation_plans

BUDGET_SEC = 120.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """A worker's initializer: on Linux, ask the kernel to send it SIGTERM when its parent
    dies. Without it, a benchmark killed by hand left its spawned workers computing for
    half an hour, slowing whatever ran next."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def worker_pool(workers: int = 2) -> ProcessPoolExecutor:
    """The benchmarks' pool of run processes: spawned, not forked (the parent runs JAX,
    which is multithreaded), and ended with their parent."""
    return ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_die_with_parent
    )


@lru_cache(maxsize=8)
def _problem(spec_json: str):
    enable_compilation_cache()
    return build_problem(
        ProblemSpec.model_validate_json(spec_json), cache_dir=Path("results/targets")
    )


def _run(
    spec_json: str, method: str, config: dict, seed: int, budget_sec: float = BUDGET_SEC
) -> dict[str, Any]:
    result = run_trial(_problem(spec_json), method, config, budget_sec=budget_sec, seed=seed)
    return result.model_dump(mode="json")


def _run_group(spec_json: str, method: str, config: dict, seeds: list[int]) -> list[dict]:
    """A validation group: one configuration's runs on one problem, one after the other."""
    return [_run(spec_json, method, config, seed) for seed in seeds]


def group_submitter(pool, spec_json: str, method: str):
    """``submit_group(plans)`` for ``run_all``: the group as one job of the pool."""
    return lambda plans: pool.submit(
        _run_group, spec_json, method, plans[0].config, [plan.seed for plan in plans]
    )


def first_done(futures):
    return next(iter(wait(futures, return_when=FIRST_COMPLETED).done))


def judge_against(member: Member):
    """``judge(plan, result)``: the run's |error| against the problem's reference."""
    return lambda plan, result: PerProblem().judge(plan, result, member)


def pipeline(pool, spec, method, ref, *, trials, repeats, pruner, fresh, tag) -> dict:
    """One search (``trials`` × ``repeats`` runs), then its best configuration on the
    fresh seeds. The fresh seeds are those of one shared study name, so both pipelines'
    choices are validated on the same noise."""
    spec_json = spec.model_dump_json()
    space = load_methods()[method]
    study = open_study(
        "sqlite:///:memory:", f"{spec.pid}:{method}:{tag}", pruner=make_pruner(pruner)
    )

    def submit(plan):
        return pool.submit(_run, spec_json, method, plan.config, plan.seed)

    started = time.perf_counter()
    runs = []
    members = [Member(spec.pid, spec.name, ref.llc_ref, ref.se_ref)]
    driver = Driver(
        study, space, method=method, members=members, budget_sec=BUDGET_SEC,
        repeats=repeats, pruner=pruner, record=runs.append,
    )  # fmt: skip
    driver.run(trials, batch=2, submit=submit, first_done=first_done)
    (best,) = top_configurations(study, 1)
    plans = validation_plans(
        [best], space, study_name=f"{spec.pid}:{method}", pids=[spec.pid], method=method,
        seeds=fresh, budget_sec=BUDGET_SEC,
    )  # fmt: skip
    checked = run_all(
        plans, submit_group=group_submitter(pool, spec_json, method), first_done=first_done,
        judge=judge_against(members[0]),
    )  # fmt: skip
    errors = [run.abs_error for run in checked if run.abs_error is not None]
    mean = statistics.fmean(errors) if errors else None
    se = statistics.stdev(errors) / len(errors) ** 0.5 if len(errors) > 1 else None
    return {
        "search_runs": len(runs),
        "trials": trial_counts(study),
        "reported_error": best.search_objective,
        "params": best.hyperparams,
        "validated_error": mean,
        "validated_se": se,
        "validated_failed": len(checked) - len(errors),
        "seconds": round(time.perf_counter() - started, 1),
    }


def race(pool, spec, method, ref, *, sampler: str, trials: int, fresh: int) -> dict:
    """Search runs until the best-so-far configuration's validated error is within
    2 × se_ref, for one sampler."""
    spec_json = spec.model_dump_json()
    space = load_methods()[method]
    name = f"{spec.pid}:{method}:race-{sampler}"
    # (The driver sets the study's sampler: a sampler set on the study here was replaced.)
    study = open_study("sqlite:///:memory:", name, pruner=make_pruner("wilcoxon"), sampler=sampler)
    members = [Member(spec.pid, spec.name, ref.llc_ref, ref.se_ref)]
    validated: dict[str, float | None] = {}
    curve: list[tuple[int, float | None]] = []
    runs: list = []

    def submit(plan):
        return pool.submit(_run, spec_json, method, plan.config, plan.seed)

    def on_outcome(outcome, done, total):
        best = top_configurations(study, 1)
        if not best:
            curve.append((len(runs), None))
            return
        if best[0].config_id not in validated:
            plans = validation_plans(
                best, space, study_name=f"{spec.pid}:{method}", pids=[spec.pid],
                method=method, seeds=fresh, budget_sec=BUDGET_SEC,
            )  # fmt: skip
            checked = run_all(
                plans, submit_group=group_submitter(pool, spec_json, method),
                first_done=first_done, judge=judge_against(members[0]),
            )  # fmt: skip
            errors = [run.abs_error for run in checked if run.abs_error is not None]
            validated[best[0].config_id] = statistics.fmean(errors) if errors else None
        curve.append((len(runs), validated[best[0].config_id]))

    driver = Driver(
        study, space, method=method, members=members, budget_sec=BUDGET_SEC, repeats=3,
        pruner="wilcoxon", record=runs.append, on_outcome=on_outcome, sampler=sampler,
    )  # fmt: skip
    driver.run(trials, batch=1, submit=submit, first_done=first_done)
    target = 2 * ref.se_ref
    reached = next((n for n, err in curve if err is not None and err <= target), None)
    return {
        "sampler": sampler,
        "target": target,
        "search_runs_to_target": reached,
        "search_runs": len(runs),
        "final_validated_error": curve[-1][1] if curve else None,
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", default="default")
    parser.add_argument("--methods", nargs="+", default=["sgld", "mclmc"])
    parser.add_argument("--search-runs", type=int, default=12)
    parser.add_argument("--fresh-seeds", type=int, default=8)
    parser.add_argument("--race-problems", type=int, default=2, help="TPE vs random on the first N")
    parser.add_argument("--race-trials", type=int, default=12)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tuning_honesty.json"))
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    enable_compilation_cache()
    results = []
    with worker_pool() as pool:
        for spec in load_problem_set(args.problems).problems:
            problem = _problem(spec.model_dump_json())
            ref = run_reference(problem, ReferenceConfig(num_warmup=300, num_draws=600))
            for method in args.methods:
                common = {"fresh": args.fresh_seeds}
                single = pipeline(
                    pool, spec, method, ref, trials=args.search_runs, repeats=1,
                    pruner="none", tag="single", **common,
                )  # fmt: skip
                repeated = pipeline(
                    pool, spec, method, ref, trials=args.search_runs // 3, repeats=3,
                    pruner="wilcoxon", tag="repeats", **common,
                )  # fmt: skip
                row = {
                    "problem": spec.name, "method": method, "llc_ref": ref.llc_ref,
                    "se_ref": ref.se_ref, "single_seed": single, "repeats": repeated,
                }  # fmt: skip
                if len({r["problem"] for r in results} | {spec.name}) <= args.race_problems:
                    row["race"] = [
                        race(pool, spec, method, ref, sampler=sampler, trials=args.race_trials,
                             fresh=args.fresh_seeds)
                        for sampler in ("tpe", "random")
                    ]  # fmt: skip
                results.append(row)
                print(_line(row), flush=True)
                atomic_write_json(args.out, {"args": vars(args) | {"out": str(args.out)},
                                             "results": results})  # fmt: skip
    return 0


def _line(row: dict) -> str:
    def pct(value, ref):
        return "–" if value is None else f"{100 * value / ref:.1f} %"

    ref, single, rep = row["llc_ref"], row["single_seed"], row["repeats"]
    return (
        f"{row['problem']:16s} {row['method']:6s} llc_ref {ref:.3f} ± {row['se_ref']:.3f} | "
        f"single seed: reported {pct(single['reported_error'], ref)}, validated "
        f"{pct(single['validated_error'], ref)} ± {pct(single['validated_se'], ref)} | "
        f"repeats: search {pct(rep['reported_error'], ref)}, validated "
        f"{pct(rep['validated_error'], ref)} ± {pct(rep['validated_se'], ref)} "
        f"({rep['trials']['pruned']} of {rep['trials']['done']} trials pruned, "
        f"{rep['search_runs']} runs)"
        + "".join(
            f" | {r['sampler']}: {r['search_runs_to_target'] or 'not reached in'} "
            f"{'runs to' if r['search_runs_to_target'] else str(r['search_runs']) + ' runs:'} "
            f"2 se_ref, final {pct(r['final_validated_error'], ref)}"
            for r in row.get("race", [])
        )
    )


if __name__ == "__main__":
    sys.exit(main())
