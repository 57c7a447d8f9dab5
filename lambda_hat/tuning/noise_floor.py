"""An optional early stop: a study ends once no further trial can beat its best by more
than the noise.

A trial's objective is an |error| against the reference, averaged over its repeats. Two
noises sit in it: the reference's own SE, and the spread of the method over seeds (the
trial's ``objective_se``, from its repeats). Even a perfect configuration scores about
that much. So once the best trial's objective is within ``NOISE_FLOOR_Z`` combined SE of
zero,

    best ≤ z · √(reference SE² + best's objective SE²),

any other trial could beat it by at most about that much, which no number of trials can
tell from luck: the study stops asking (trials in flight finish). For a recipe study the
objective is a mean relative error over problems, and the reference SE is the SE of the
mean of se_ref/llc_ref over them. A best trial without an SE (one repeat) never stops a
study: its seed noise is unknown. Huber objectives are not errors and never stop one.

>>> from lambda_hat.tuning.kinds import Member, PerProblem, Recipe
>>> reference_noise(PerProblem(), [Member("p_a", "a", 3.0, 0.05)])
0.05
>>> family = [Member("p_a", "a", 3.0, 0.03), Member("p_b", "b", 4.0, 0.04)]
>>> round(reference_noise(Recipe("set"), family), 5)  # √(0.01² + 0.01²) / 2
0.00707
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState

from lambda_hat.tuning.kinds import Member, PerProblem, StudyKind

NOISE_FLOOR_Z = 2.0  # a perfect configuration's |error| stays below 2 combined SE 95 % of the time


def reference_noise(kind: StudyKind, members: list[Member]) -> float | None:
    """The reference's SE in the units of the study's objective (None: not an error)."""
    if isinstance(kind, PerProblem):
        return members[0].se_ref if kind.objective == "abs" else None
    relative = [(m.se_ref / m.llc_ref) ** 2 for m in members if m.llc_ref > 0]
    return math.sqrt(sum(relative)) / len(relative) if relative else None


def noise_floor_reached(
    study: optuna.Study, noise: float | None, z: float = NOISE_FLOOR_Z
) -> tuple[float, float] | None:
    """(best objective, floor) once the study's best is at the noise floor, else None."""
    if noise is None:
        return None
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = min(complete, key=lambda trial: trial.value)
    seed_se = best.user_attrs.get("objective_se")
    if seed_se is None or not math.isfinite(seed_se):
        return None
    floor = z * math.hypot(noise, seed_se)
    return (best.value, floor) if best.value <= floor else None
