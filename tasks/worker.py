"""What every task needs on a worker: the problem (built once per process) and who ran it."""

from __future__ import annotations

import os
import socket
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.problems.targets import Problem, build_problem


@lru_cache(maxsize=1)
def _jax_cache(directory: str) -> None:
    enable_compilation_cache(directory)


@lru_cache(maxsize=16)
def _problem(spec_json: str, cache_dir: str) -> Problem:
    return build_problem(ProblemSpec.model_validate_json(spec_json), cache_dir=Path(cache_dir))


_building = threading.Lock()


def problem_for(spec: dict[str, Any], results_dir: str, jax_cache_dir: str) -> Problem:
    """The built problem (w* trained or loaded from ``<results_dir>/targets``), cached in
    this worker process so a study's trials do not reload it. A worker with several
    threads builds it once, not once per thread."""
    spec_json = ProblemSpec.model_validate(spec).model_dump_json()
    with _building:
        _jax_cache(jax_cache_dir)
        return _problem(spec_json, str(Path(results_dir) / "targets"))


def worker_info() -> dict[str, Any]:
    """Where a task ran: host, process, and the SLURM job if any."""
    return {
        "hostname": socket.gethostname(),
        "worker_pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_job_name": os.environ.get("SLURM_JOB_NAME"),
    }
