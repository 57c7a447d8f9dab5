"""How long the command line takes to refuse a bad problem file, and to print a dry run.

    .venv/bin/python benchmarks/cli_latency.py                       # this checkout, ~1 min
    .venv/bin/python benchmarks/cli_latency.py --repo /tmp/old-clone  # another checkout

Runs ``python flows/tune.py --problems <bad file>`` (a width of -1: refused in one line)
and ``python flows/tune.py --dry-run`` (the default preset) ``--repeats`` times each, in
a fresh results directory, and reports the median and the range of the wall times, with
the heavy libraries each command loaded (the refusal should load none of them). Results
go to ``benchmarks/results/cli_latency.json`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import ast
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lambda_hat.io import atomic_write_json

OUT = Path(__file__).parent / "results" / "cli_latency.json"
HEAVY = ("jax", "blackjax", "prefect", "matplotlib", "optuna", "dask", "pyarrow")
BAD_PROBLEMS = "problems:\n  - name: x\n    model: {family: dln, widths: [2, -1]}\n"
# Run the flow's script as ``python flows/tune.py`` would, then list what it loaded.
PROBE = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "finally:\n"
    f"    print('LOADED', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
)


def timed(repo: Path, args: list[str], env: dict[str, str]) -> tuple[float, int, list[str]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "flows/tune.py", *args],
        cwd=repo, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    loaded = [line for line in done.stderr.splitlines() if line.startswith("LOADED")]
    modules = ast.literal_eval(loaded[-1].removeprefix("LOADED ")) if loaded else []
    return seconds, done.returncode, modules


def measure(repo: Path, args: list[str], repeats: int, env: dict[str, str]) -> dict:
    runs = [timed(repo, args, env) for _ in range(repeats)]
    times = [seconds for seconds, _, _ in runs]
    return {
        "args": args,
        "exit_codes": sorted({code for _, code, _ in runs}),
        "median_sec": statistics.median(times),
        "min_sec": min(times),
        "max_sec": max(times),
        "loaded": runs[-1][2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cli-latency-"))
    bad = work / "bad.yaml"
    bad.write_text(BAD_PROBLEMS)
    env = {**os.environ, "LAMBDA_HAT_RESULTS_DIR": str(work / "results"),
           "LAMBDA_HAT_ARTIFACTS_DIR": str(work / "artifacts"),
           "PYTHONPATH": str(args.repo)}  # fmt: skip
    result = {
        "repo": str(args.repo),
        "commit": subprocess.run(
            ["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),  # fmt: skip
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "repeats": args.repeats,
        "refusal": measure(args.repo, ["--problems", str(bad)], args.repeats, env),
        "dry_run": measure(args.repo, ["--dry-run"], args.repeats, env),
    }
    atomic_write_json(args.out, result)
    for name in ("refusal", "dry_run"):
        row = result[name]
        print(
            f"{name}: median {row['median_sec']:.2f} s (range {row['min_sec']:.2f}–"
            f"{row['max_sec']:.2f}), exit {row['exit_codes']}, loaded {row['loaded']}"
        )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
