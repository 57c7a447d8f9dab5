"""One reference per problem for the life of a study.

A study's trials are told errors against each problem's ``llc_ref``. A later run of the
study against a reference that moved by more than its noise (edited, recomputed with
other settings, computed by another version) would tell new trials errors against another
number, and rank configurations scored against two. The first run records each problem's
reference on the study (user attr ``references``); a later run whose reference differs by
more than ``PIN_Z`` combined standard errors is refused in one line. Within the noise (a
pooled extension of the same reference, a recompute on another machine) the study goes on.

>>> import optuna
>>> from lambda_hat.tuning.kinds import Member
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study(study_name="p_x:sgld")
>>> pin_references(study, [Member("p_x", "x", 3.0, 0.1)])
>>> pin_references(study, [Member("p_x", "x", 3.05, 0.07)])   # within the noise
>>> try:
...     pin_references(study, [Member("p_x", "x", 4.0, 0.1)])
... except ReferenceChanged as error:
...     print(str(error).split("; ")[1].split(". ")[0])
the reference is now 4 ± 0.1 (7.1 SE away)
"""

from __future__ import annotations

import math

import optuna

from lambda_hat.tuning.kinds import Member
from lambda_hat.tuning.search_space import MethodSpace

PIN_Z = 3.0


class ReferenceChanged(RuntimeError):
    """A study's reference moved beyond its noise since the study began. One line."""


def pin_references(study: optuna.Study, members: list[Member]) -> None:
    """Check ``members``' references against those the study was scored with, and record
    those it has not seen (see the module docstring)."""
    seen: dict[str, dict[str, float]] = dict(study.user_attrs.get("references") or {})
    for member in members:
        first = seen.get(member.pid)
        if first is None:
            continue
        spread = math.hypot(member.se_ref, first["se_ref"])
        z = abs(member.llc_ref - first["llc_ref"]) / spread if spread > 0 else math.inf
        if member.llc_ref != first["llc_ref"] and z > PIN_Z:
            raise ReferenceChanged(
                f"study {study.study_name}: its trials were scored against llc_ref "
                f"{first['llc_ref']:.4g} ± {first['se_ref']:.2g} for {member.name}; the "
                f"reference is now {member.llc_ref:.4g} ± {member.se_ref:.2g} ({z:.1f} SE "
                "away). Tune it in a study of its own: another storage "
                "(LAMBDA_HAT_OPTUNA_STORAGE), or delete this one (optuna delete-study "
                f"--study-name '{study.study_name}' --storage ...)"
            )
    new = {m.pid: {"llc_ref": m.llc_ref, "se_ref": m.se_ref} for m in members if m.pid not in seen}
    if new:
        study.set_user_attr("references", {**seen, **new})


class UnitsChanged(RuntimeError):
    """A study resumed in other units than it began in. One line."""


def pin_units(study: optuna.Study, space: MethodSpace) -> None:
    """The units of the study's tuned values (its ``*_scale`` settings, e.g. SGLD's step
    size absolute or per nβ), recorded by its first run. A later run in other units (a
    ``--warm-start`` recipe per nβ, an edited methods file) is refused in one line: its
    trials' values would mean other configurations.

    >>> from lambda_hat.tuning.search_space import load_methods
    >>> from lambda_hat.tuning.search_space import recipe_space
    >>> study = optuna.create_study(study_name="p_x:sgld")
    >>> pin_units(study, load_methods()["sgld"])
    >>> try:
    ...     pin_units(study, recipe_space(load_methods()["sgld"]))
    ... except UnitsChanged as error:
    ...     print(str(error).split(". ")[0])
    study p_x:sgld: its trials tuned step_size_scale 'absolute'; this run 'per_nbeta'
    """
    config = space.config({}).model_dump(mode="json")
    units = {name: value for name, value in config.items() if name.endswith("_scale")}
    first = study.user_attrs.get("units")
    if first is None:
        if units:
            study.set_user_attr("units", units)
        return
    for name, value in units.items():
        if name in first and first[name] != value:
            raise UnitsChanged(
                f"study {study.study_name}: its trials tuned {name} {first[name]!r}; this run "
                f"{value!r}. Tune it in a study of its own: another storage "
                "(LAMBDA_HAT_OPTUNA_STORAGE), or delete this one (optuna delete-study "
                f"--study-name '{study.study_name}' --storage ...)"
            )
