"""Does the validated interval hold? Each recommendation of a finished campaign rerun on
fresh seeds beyond its validation seeds, and how often each kind of interval covers them.

    bash scripts/run.sh                                   # a campaign (here: the main job)
    .venv/bin/python benchmarks/interval_coverage.py --fresh-seeds 8
    # several campaigns pooled: --results-dir R1 --artifacts-dir A1 --results-dir R2 ...

For every per-problem study in ``<results>/leaderboard.parquet`` (``LAMBDA_HAT_*`` dirs, or
``--results-dir``/``--artifacts-dir``, each given once per campaign when several campaigns
are pooled: the issue asks for 30 studies), its recommended configuration (its full config from
a validation run's ``manifest.json``) runs on ``--fresh-seeds`` further validation seeds
(the study's validation sequence continued, so none was seen before). Three 95 % intervals
are built from the k validation runs and checked against the fresh mean:

* ``t_abs``: mean |error| ± t·sd/√k, what the leaderboard reports;
* ``bootstrap_abs``: the percentile bootstrap of mean |error| (4 000 resamples);
* ``t_signed``: the signed error llc_hat − llc_ref (the bias), ± t·sd/√k: closer to normal
  than |error|, whose distribution is folded at 0.

An interval *holds* when the fresh mean m_f lies within it, widened for m_f's own noise:
|m_f − m_v| ≤ √(h² + (1.96·se_f)²), h the interval's half-width on m_f's side of the
validated mean m_v. Reported: how often each holds, with its Wilson 95 % interval, over
the studies (the issue's target: ≥ 90 %, over at least 12). Results:
``benchmarks/results/interval_coverage.json``.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from tuning_honesty import (  # (beside this script: python benchmarks/interval_coverage.py)
    _run,
    worker_pool,
)

from lambda_hat.io import atomic_write_json, read_json
from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.results.campaign import load
from lambda_hat.settings import Settings
from lambda_hat.tuning.stats import t_quantile
from lambda_hat.tuning.trials import study_seeds

Z95 = 1.959964


def t_bounds(values: list[float]) -> tuple[float, float]:
    mean, half = statistics.fmean(values), 0.0
    if len(values) > 1:
        half = t_quantile(0.95, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return mean - half, mean + half


def bootstrap_bounds(values: list[float], resamples: int = 4000) -> tuple[float, float]:
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def holds(bounds: tuple[float, float], validated: float, fresh: list[float]) -> bool:
    """The fresh mean within the interval, widened for the fresh mean's own noise."""
    fresh_mean = statistics.fmean(fresh)
    fresh_se = statistics.stdev(fresh) / len(fresh) ** 0.5 if len(fresh) > 1 else 0.0
    low, high = bounds
    half = high - validated if fresh_mean >= validated else validated - low
    return abs(fresh_mean - validated) <= math.hypot(half, Z95 * fresh_se)


def wilson(hits: int, total: int) -> list[float] | None:
    if not total:
        return None
    p, z = hits / total, Z95
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [max(centre - half, 0.0), min(centre + half, 1.0)]


def study_runs(leader: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recommendation's validation runs that finished."""
    return [
        r for r in rows
        if r["stage"] == "validation" and r["config_id"] == leader["config_id"]
        and r["pid"] == leader["pid"] and r["method"] == leader["method"]
        and r["llc_hat"] is not None
    ]  # fmt: skip


def rerun_study(
    leader: dict[str, Any],
    runs: list[dict[str, Any]],
    artifacts_dir: Path,
    fresh_seeds: int,
    pool: ProcessPoolExecutor,
) -> dict[str, Any]:
    """One study's recommendation on ``fresh_seeds`` further seeds, and which intervals hold."""
    run_dir = artifacts_dir / "runs" / leader["pid"] / leader["method"]
    config = read_json(run_dir / runs[0]["run_id"] / "manifest.json")["config"]
    spec_path = artifacts_dir / "problems" / leader["pid"] / "spec.yaml"
    spec = ProblemSpec.model_validate(yaml.safe_load(spec_path.read_text()))
    seeds = study_seeds(leader["study_name"], len(runs) + fresh_seeds, "validation")[len(runs) :]
    futures = [pool.submit(_run, spec.model_dump_json(), leader["method"], config, s)
               for s in seeds]  # fmt: skip
    fresh_hats = [h for h in (f.result()["llc_hat"] for f in futures) if h is not None]
    ref = leader["llc_ref"]
    hats = [r["llc_hat"] for r in runs]
    abs_v, signed_v = [abs(h - ref) for h in hats], [h - ref for h in hats]
    abs_f, signed_f = [abs(h - ref) for h in fresh_hats], [h - ref for h in fresh_hats]
    checks = {
        "t_abs": holds(t_bounds(abs_v), statistics.fmean(abs_v), abs_f),
        "bootstrap_abs": holds(bootstrap_bounds(abs_v), statistics.fmean(abs_v), abs_f),
        "t_signed": holds(t_bounds(signed_v), statistics.fmean(signed_v), signed_f),
    }
    return {
        "study": leader["study_name"], "problem": leader["problem_name"],
        "method": leader["method"], "llc_ref": ref, "validated_runs": len(runs),
        "fresh_runs": len(fresh_hats), "validated_abs": statistics.fmean(abs_v),
        "fresh_abs": statistics.fmean(abs_f) if abs_f else None, "holds": checks,
    }  # fmt: skip


def campaign_dirs(args: argparse.Namespace, settings: Settings) -> list[tuple[Path, Path]]:
    """(artifacts, results) per campaign; one line and exit 2 when the two lists differ."""
    results = args.results_dir or [settings.results_dir]
    artifacts = args.artifacts_dir or [settings.artifacts_dir]
    if len(results) != len(artifacts):
        print(f"--results-dir and --artifacts-dir: give them once per campaign "
              f"(got {len(results)} and {len(artifacts)})", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    return list(zip(artifacts, results, strict=True))


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results-dir", type=Path, action="append")
    parser.add_argument("--artifacts-dir", type=Path, action="append")
    parser.add_argument("--fresh-seeds", type=int, default=8)
    parser.add_argument("--out", type=Path,
                        default=Path("benchmarks/results/interval_coverage.json"))  # fmt: skip
    args = parser.parse_args(argv)
    campaigns = campaign_dirs(args, settings)  # checked before any worker starts
    studies = []
    with worker_pool() as pool:
        for artifacts_dir, results_dir in campaigns:
            campaign = load(artifacts_dir, results_dir)
            for leader in campaign.leaderboard:
                if leader["kind"] != "problem" or not leader.get("config_id"):
                    continue
                runs = study_runs(leader, campaign.runs)
                if len(runs) < 2:
                    continue
                studies.append(rerun_study(leader, runs, artifacts_dir, args.fresh_seeds, pool))
                print(studies[-1], flush=True)
    coverage = {
        kind: {"holds": sum(s["holds"][kind] for s in studies), "studies": len(studies),
               "wilson95": wilson(sum(s["holds"][kind] for s in studies), len(studies))}
        for kind in ("t_abs", "bootstrap_abs", "t_signed")
    }  # fmt: skip
    atomic_write_json(args.out, {"args": {k: str(v) for k, v in vars(args).items()},
                                 "coverage": coverage, "studies": studies})  # fmt: skip
    for kind, cell in coverage.items():
        print(f"{kind}: holds in {cell['holds']} of {cell['studies']} studies "
              f"(Wilson 95 % {cell['wilson95']})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
