"""``artifacts/recipes/<set>-<method>.yaml``: a recipe study's recommended configuration as
a methods file (``--methods-file``, fixed values only), with its evidence beside it.

The ``methods:`` entry is what a run uses; ``evidence:`` (ignored when the file is loaded
as a methods file) says where the recipe comes from and how right it was: its validated
mean relative error over the tuning problems and its transfer error on the held-out ones,
each with its 95 % interval.

>>> import tempfile, pathlib
>>> from lambda_hat.tuning.search_space import load_methods
>>> row = {"method": "sgld", "study_name": "recipe-demo:sgld", "params_json": '{"step_size": 0.01}',
...        "validated_rel_error_mean": 0.1, "validated_rel_error_ci_low": 0.05,
...        "validated_rel_error_ci_high": 0.15, "n_problems": 2, "n_validation_runs": 8}
>>> config = {"step_size": 0.01, "step_size_scale": "per_nbeta"}
>>> path = pathlib.Path(tempfile.mkdtemp()) / "demo-sgld.yaml"
>>> _ = write_recipe(path, row, config, tuned_on=["a", "b"], holdout=None)
>>> space = load_methods(path)["sgld"]
>>> space.space, space.config({}).step_size_scale
({}, 'per_nbeta')
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from lambda_hat.io import atomic_write_bytes


def _interval(row: dict[str, Any], prefix: str) -> dict[str, Any] | None:
    if row.get(f"{prefix}_mean") is None:
        return None
    return {
        "mean": row[f"{prefix}_mean"],
        "ci95": [row.get(f"{prefix}_ci_low"), row.get(f"{prefix}_ci_high")],
    }


def recipe_document(
    row: dict[str, Any], config: dict[str, Any], tuned_on: list[str], holdout: str | None
) -> dict[str, Any]:
    """The file's content: the methods entry and the evidence."""
    evidence: dict[str, Any] = {
        "study": row["study_name"],
        "tuned_on": tuned_on,
        "tuned_params": json.loads(row["params_json"]),
        "validated_rel_error": _interval(row, "validated_rel_error"),
        "validation": {"problems": row.get("n_problems"), "runs": row.get("n_validation_runs")},
    }
    if holdout is not None:
        evidence["transfer"] = {
            "held_out_set": holdout,
            "rel_error": _interval(row, "transfer_rel_error"),
            "problems": row.get("n_transfer_problems"),
            "runs": row.get("n_transfer_runs"),
            "failed": row.get("n_transfer_failed"),
        }
    return {"methods": {row["method"]: {"fixed": config, "space": {}}}, "evidence": evidence}


def write_recipe(
    path: Path, row: dict[str, Any], config: dict[str, Any], *, tuned_on: list[str],
    holdout: str | None,
) -> Path:  # fmt: skip
    """Write the recipe atomically; returns its path."""
    header = (
        f"# lambda_hat recipe: {row['method']} tuned across {len(tuned_on)} problems "
        f"({row['study_name']}).\n"
        "# Errors are mean relative errors |llc_hat - llc_ref| / llc_ref over problems, on "
        "fresh seeds, with 95 % intervals.\n"
        f"# Use: python flows/tune.py --methods {row['method']} --methods-file {path.name} "
        "--problems <your set>\n"
    )
    document = recipe_document(row, config, tuned_on, holdout)
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def recommendation_document(row: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A per-problem study's recommendation as a methods file, with its evidence: the
    problem and its reference, the validated error and bias with their 95 % intervals,
    and the search objective it was chosen on (biased low)."""
    evidence: dict[str, Any] = {
        "study": row["study_name"],
        "problem": row["problem_name"],
        "pid": row["pid"],
        "config_id": row["config_id"],
        "llc_ref": row.get("llc_ref"),
        "se_ref": row.get("se_ref"),
        "tuned_params": json.loads(row["params_json"]),
        "validated_error": _interval(row, "validated_error"),
        "validated_rel_error": _interval(row, "validated_rel_error"),
        "validated_bias": row.get("validated_bias"),
        "validation_runs": row.get("n_validation_runs"),
        "search_objective": row.get("search_objective"),
    }
    if row.get("n_transfer_runs"):
        evidence["transfer_rel_error"] = _interval(row, "transfer_rel_error")
    return {"methods": {row["method"]: {"fixed": config, "space": {}}}, "evidence": evidence}


def write_recommendation(path: Path, row: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write a leaderboard row's recommended configuration (``config``: the full method
    config) as a methods file, atomically; a recipe row as ``write_recipe`` does."""
    if row.get("kind") == "recipe":
        document = recipe_document(row, config, tuned_on=[], holdout=None)
        document["evidence"].pop("tuned_on")
    else:
        document = recommendation_document(row, config)
    header = (
        f"# lambda_hat: the recommended {row['method']} configuration of {row['study_name']} "
        f"({row['problem_name']}).\n"
        f"# Use: python flows/tune.py --methods {row['method']} --methods-file {path.name} "
        "--problems <your set>\n"
    )
    text = header + yaml.safe_dump(document, sort_keys=False, default_flow_style=None)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
