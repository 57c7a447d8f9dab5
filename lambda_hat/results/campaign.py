"""A finished campaign as it lies on disk, for the commands that work after a run
(``python -m lambda_hat leaderboard | report | export``): the leaderboard's rows, the runs'
rows, each problem's reference and its chains, and the run's record. Reads only; imports
neither Prefect nor JAX.

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> load(root / "artifacts", root / "results")
Traceback (most recent call last):
...
lambda_hat.results.campaign.NoResults: no leaderboard in .../results (run python flows/tune.py ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambda_hat.io import read_json
from lambda_hat.reference.record import read_reference, reference_dir
from lambda_hat.results.metadata import read_run
from lambda_hat.results.tables import read_rows


class NoResults(RuntimeError):
    """Nothing to show: one line saying where it looked."""


@dataclass(frozen=True)
class Campaign:
    leaderboard: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    references: list[dict[str, Any]]
    evidence: dict[str, dict[str, Any]]
    metadata: dict[str, Any] | None
    traces: dict[str, dict[str, Any]]


def load(artifacts_dir: Path, results_dir: Path, with_runs: bool = True) -> Campaign:
    """Everything under ``results_dir`` and ``artifacts_dir``; ``NoResults`` when there is
    no leaderboard."""
    board_file = Path(results_dir) / "leaderboard.parquet"
    leaderboard = read_rows(board_file) if board_file.exists() else []
    if not leaderboard:
        raise NoResults(
            f"no leaderboard in {results_dir} (run python flows/tune.py first, or set "
            "LAMBDA_HAT_RESULTS_DIR)"
        )
    runs = read_rows(Path(results_dir) / "runs.parquet") if with_runs else []
    pids = list(dict.fromkeys([row["pid"] for row in runs if row.get("pid")]
                              + [row["pid"] for row in leaderboard]))  # fmt: skip
    references, evidence = [], {}
    for pid in pids:
        ref = read_reference(Path(artifacts_dir), pid)
        if ref is None:
            continue
        references.append(ref)
        chains = read_json(reference_dir(Path(artifacts_dir), pid) / "convergence.json")
        if isinstance(chains, dict):
            evidence[pid] = chains
    traces = recommended_traces(Path(artifacts_dir), runs, leaderboard)
    return Campaign(leaderboard, runs, references, evidence, read_run(Path(results_dir)), traces)


def recommended_traces(
    artifacts_dir: Path, runs: list[dict[str, Any]], leaderboard: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """For each per-problem study (by study name), the chains' trace of its recommended
    configuration's first validation run (from that run's ``metrics.json``), where kept."""
    traces = {}
    for board in leaderboard:
        if board.get("kind") == "recipe" or not board.get("config_id"):
            continue
        first = next(
            (row for row in runs
             if row.get("stage") == "validation" and row.get("pid") == board["pid"]
             and row.get("method") == board["method"]
             and row.get("config_id") == board["config_id"] and row.get("status") == "ok"),
            None,
        )  # fmt: skip
        if first is None:
            continue
        metrics = read_json(
            Path(artifacts_dir) / "runs" / board["pid"] / board["method"] / first["run_id"]
            / "metrics.json"
        )  # fmt: skip
        diagnostics = (metrics or {}).get("diagnostics") or {}
        if diagnostics.get("trace"):
            traces[board["study_name"]] = {**diagnostics, "seed": first.get("seed")}
    return traces
