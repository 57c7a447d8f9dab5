"""``results/campaign.json``: what the last tune run was, for the report's header and for
``python -m lambda_hat report`` / ``export`` to rebuild without the flow: the date, the code
version, the command, the search's size and sampler, the machine, the cluster profile, and
the methods' search spaces (their fixed values complete a recommendation).

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> record = describe_run(command="python flows/tune.py", problems="smoke", methods=["sgld"],
...     search={"n_trials": 4, "repeats": 3, "validate_top_k": 1, "validation_seeds": 5},
...     sampler="TPE", cluster={"kind": "local"}, spaces={})
>>> _ = save_run(folder, record); read_run(folder)["search"]["n_trials"]
4
>>> dict(metadata_rows(record))["search"]
'4 trials × 3 repeats per study; top 1 × 5 fresh validation seeds'
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from lambda_hat import __version__
from lambda_hat.io import atomic_write_json, read_json

RUN_FILE = "campaign.json"


def git_commit() -> str | None:
    """The checkout's short commit (with ``+dirty`` for uncommitted changes), or None
    outside a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def describe_run(
    *,
    command: str,
    problems: str,
    methods: list[str],
    search: dict[str, Any],
    sampler: str,
    cluster: dict[str, Any],
    spaces: dict[str, Any],
    holdout: str | None = None,
    recipe: bool = False,
) -> dict[str, Any]:
    """The campaign's record (no secret: the storage URL is not part of it)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "code_version": __version__,
        "git_commit": git_commit(),
        "command": command,
        "problems": problems,
        "holdout": holdout,
        "recipe": recipe,
        "methods": methods,
        "search": search,
        "sampler": sampler,
        "machine": {
            "hostname": socket.gethostname(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True),
            "python": platform.python_version(),
        },
        "cluster": cluster,
        "spaces": spaces,
    }


def save_run(results_dir: Path, record: dict[str, Any]) -> Path:
    path = Path(results_dir) / RUN_FILE
    atomic_write_json(path, record)
    return path


def read_run(results_dir: Path) -> dict[str, Any] | None:
    record = read_json(Path(results_dir) / RUN_FILE)
    return record if isinstance(record, dict) else None


def metadata_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The record as (label, text) rows for the report's header."""
    search = record.get("search") or {}
    machine = record.get("machine") or {}
    cluster = record.get("cluster") or {}
    validation = (
        f"top {search.get('validate_top_k')} × {search.get('validation_seeds')} fresh "
        "validation seeds"
        if search.get("validation_seeds")
        else "no validation"
    )
    version = record.get("code_version", "?")
    if record.get("git_commit"):
        version += f" (git {record['git_commit']})"
    rows = [
        ("date", str(record.get("date", "?"))),
        ("code version", version),
        ("command", str(record.get("command", "?"))),
        ("problems", str(record.get("problems"))
         + (f"; held out: {record['holdout']}" if record.get("holdout") else "")
         + ("; one recipe study per method" if record.get("recipe") else "")),
        ("methods", ", ".join(record.get("methods") or [])),
        ("search", f"{search.get('n_trials')} trials × {search.get('repeats')} repeats per "
         f"study; {validation}"),
        ("sampler", str(record.get("sampler", "?"))),
        ("machine", f"{machine.get('hostname')}, {machine.get('cpus')} CPUs, "
         f"{machine.get('platform')}, Python {machine.get('python')}"),
        ("cluster", ", ".join(f"{k} {v}" for k, v in cluster.items() if v is not None) or "?"),
    ]  # fmt: skip
    if search.get("pruner"):
        rows[5] = (rows[5][0], rows[5][1] + f"; {search['pruner']} pruner")
    return rows
