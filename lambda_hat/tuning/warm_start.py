"""A warm start: a study's first trial is a recipe's configuration.

A recipe (``artifacts/recipes/<set>-<method>.yaml``, written by a recipe campaign, or any
methods file that fixes a method's values) gives a method's whole configuration. A new
study of that method starts from it: the recipe's values of the tuned parameters become
the study's first trial (Optuna's ``enqueue_trial``), and the sampler proposes the rest.
So a study of 4 trials spends one of them on the configuration most likely to be good.

The recipe's units must be the study's: a step size per nβ read as an absolute one would
be another configuration. A recipe of SGLD steps per nβ (as recipe campaigns write them)
makes its studies tune the step per nβ too (``campaign_warm_starts``), unless the methods
file fixes the units; a ``*_scale`` value that still differs is refused in one line.
Other fixed values that differ (a recipe run with more steps, say) are reported, not
refused.

>>> import tempfile, pathlib
>>> from lambda_hat.tuning.search_space import load_methods
>>> recipe = pathlib.Path(tempfile.mkdtemp()) / "recipe.yaml"
>>> _ = recipe.write_text('''methods:
...   sgld: {fixed: {step_size: 0.001, batch_size: 64, decay_exponent: 0.1, num_steps: 3000}}''')
>>> first = warm_start_params(recipe, {"sgld": load_methods()["sgld"]})
>>> first["sgld"].params
{'step_size': 0.001, 'batch_size': 64, 'decay_exponent': 0.1}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lambda_hat.io import read_text, safe_load_yaml
from lambda_hat.tuning.search_space import CategoricalParam, MethodSpace, Param, recipe_space


class WarmStartError(ValueError):
    """A warm-start file that cannot start a study. One line naming the field."""


@dataclass(frozen=True)
class WarmStart:
    """A study's first trial: its parameters, and what the recipe fixed otherwise."""

    source: str
    params: dict[str, Any]
    differences: tuple[str, ...] = ()  # "num_steps: recipe 3000, here 1000"


def warm_start_params(path: str | Path, spaces: dict[str, MethodSpace]) -> dict[str, WarmStart]:
    """For each method of ``spaces`` that the file fixes: the first trial of its studies.
    Methods of the file that are not tuned here are ignored."""
    return _starts(_read(path), spaces, path)


def campaign_warm_starts(
    path: str | Path | None, spaces: dict[str, MethodSpace], methods: list[str], recipe: bool
) -> tuple[dict[str, MethodSpace], dict[str, dict[str, Any]]]:
    """The spaces a campaign's studies tune and each method's warm start (as the study
    subflow takes it, JSON), checked before anything runs.

    A recipe campaign's studies tune ``recipe_space``. A per-problem study tunes its method's
    space, in the recipe's step-size units when the recipe is per nβ and the methods file
    does not fix them.
    """
    tuned = {m: recipe_space(spaces[m]) if recipe else spaces[m] for m in methods}
    if path is None:
        return tuned, {}
    entries = _read(path)
    for method in methods:
        entry = entries.get(method)
        fixed = entry.get("fixed") if isinstance(entry, dict) else None
        if isinstance(fixed, dict) and fixed.get("step_size_scale") == "per_nbeta":
            tuned[method] = recipe_space(tuned[method])  # (a no-op where the units are fixed)
    starts = _starts(entries, tuned, path)
    return tuned, {method: asdict(start) for method, start in starts.items()}


def _read(path: str | Path) -> dict[str, Any]:
    """The file's ``methods:`` mapping, or one line saying why it has none."""
    source = f"--warm-start {path}"
    if Path(path).is_dir():
        raise WarmStartError(f"--warm-start: {str(path)!r} is a directory; give a recipe file")
    if not Path(path).is_file():
        raise WarmStartError(f"--warm-start: no such file {str(path)!r}")
    text = read_text(Path(path), "--warm-start", WarmStartError)
    data = safe_load_yaml(text, source, WarmStartError)
    if not isinstance(data, dict) or not isinstance(data.get("methods"), dict):
        raise WarmStartError(f"{source}: expected a recipe, a mapping with 'methods:'")
    return data["methods"]


def _starts(
    entries: dict[str, Any], spaces: dict[str, MethodSpace], path: str | Path
) -> dict[str, WarmStart]:
    source = f"--warm-start {path}"
    starts = {
        method: _first_trial(entry, spaces[method], str(path), f"{source}: methods.{method}")
        for method, entry in entries.items()
        if method in spaces
    }
    if not starts:
        raise WarmStartError(
            f"{source}: fixes none of the methods tuned here ({', '.join(spaces)})"
        )
    return starts


def _first_trial(entry: Any, space: MethodSpace, source: str, where: str) -> WarmStart:
    fixed = entry.get("fixed") if isinstance(entry, dict) else None
    if not isinstance(fixed, dict):
        raise WarmStartError(f"{where}.fixed: expected the recipe's values (a mapping)")
    missing = [name for name in space.space if name not in fixed]
    if missing:
        raise WarmStartError(f"{where}.fixed: no value for the tuned {', '.join(missing)}")
    params = {name: fixed[name] for name in space.space}
    for name, value in params.items():
        outside = _outside(space.space[name], value)
        if outside:
            raise WarmStartError(f"{where}.fixed.{name}: {value!r} {outside}")
    try:
        here = space.config(params).model_dump(mode="json")
    except ValueError as error:  # a combination the method's config refuses
        raise WarmStartError(f"{where}.fixed: {error}") from None
    differences = []
    for name, value in fixed.items():
        if name in params or name not in here or here[name] == value:
            continue
        if name.endswith("_scale"):
            raise WarmStartError(
                f"{where}.fixed.{name}: {value!r} in the recipe but {here[name]!r} here: "
                "its tuned values would mean another configuration"
            )
        differences.append(f"{name}: recipe {value!r}, here {here[name]!r}")
    return WarmStart(source=source, params=params, differences=tuple(differences))


def _outside(param: Param, value: Any) -> str | None:
    """Why ``value`` is not in the search space of ``param``, or None."""
    if isinstance(param, CategoricalParam):
        return None if value in param.choices else f"is not one of {list(param.choices)}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "is not a number"
    if not param.low <= value <= param.high:
        return f"is outside the search space [{param.low:g}, {param.high:g}]"
    return None
