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
