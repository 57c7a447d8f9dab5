"""What proposes a study's next configuration (Optuna samplers), by name.

- ``tpe``: Optuna's TPESampler with the constant liar. Its first 10 trials are a random
  start-up, so at the 4-16 trials people afford it is mostly random search.
- ``qmc-tpe``: the first ``QMC_STARTUP`` trials from a scrambled Sobol sequence (spread
  over the space, not clumped as random draws can be), then multivariate TPE, which
  models the parameters jointly, from there on.
- ``random``: Optuna's RandomSampler, the baseline a search must beat.

Each is seeded (``lambda_hat.tuning.storage.sampler_seed``): the same study proposes the
same configurations again, and two studies different ones.

>>> import optuna
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> study = optuna.create_study(sampler=make_sampler("qmc-tpe", seed=1))
>>> study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=12)
>>> abs(study.best_params["x"] - 0.3) < 0.1
True
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import optuna

SearchSampler = Literal["tpe", "qmc-tpe", "random"]
SEARCH_SAMPLERS: tuple[str, ...] = ("tpe", "qmc-tpe", "random")
QMC_STARTUP = 4  # Sobol trials before TPE models the results

DESCRIPTIONS = {
    "tpe": "Optuna TPESampler with the constant liar (its first 10 trials are random start-up)",
    "qmc-tpe": f"{QMC_STARTUP} scrambled Sobol (QMC) trials, then multivariate TPE with the "
    "constant liar",
    "random": "Optuna RandomSampler",
}


def describe_sampler(kind: str) -> str:
    """The sampler in words, for the report's header and ``campaign.json``."""
    return f"{DESCRIPTIONS[kind]}; seeded per study and reseeded on each resume"


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler ``kind`` (one of ``SEARCH_SAMPLERS``) seeded with ``seed``."""
    import optuna

    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if kind == "qmc-tpe":
        return _qmc_then_tpe(seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"sampler: unknown {kind!r} (allowed: {', '.join(SEARCH_SAMPLERS)})")


def _qmc_then_tpe(seed: int) -> optuna.samplers.BaseSampler:
    import optuna
    from optuna.trial import TrialState

    class QmcThenTpe(optuna.samplers.BaseSampler):
        """Sobol for a study's first ``QMC_STARTUP`` trials, TPE after. Which one proposes
        a trial is decided when it starts and kept for all its parameters."""

        def __init__(self) -> None:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.0
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.qmc = optuna.samplers.QMCSampler(
                    scramble=True, seed=seed, warn_independent_sampling=False,
                    warn_asynchronous_seeding=False,
                )  # fmt: skip
                self.tpe = optuna.samplers.TPESampler(
                    seed=seed, n_startup_trials=QMC_STARTUP, multivariate=True,
                    constant_liar=True,
                )  # fmt: skip
            self.chosen: dict[int, Any] = {}

        def _for(self, study: optuna.Study, trial: optuna.trial.FrozenTrial):
            if trial.number not in self.chosen:
                # Trials before this one (running ones too: constant liar) count as start-up.
                earlier = study.get_trials(
                    deepcopy=False,
                    states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING),
                )
                started = sum(t.number < trial.number for t in earlier)
                self.chosen[trial.number] = self.qmc if started < QMC_STARTUP else self.tpe
            return self.chosen[trial.number]

        def before_trial(self, study, trial) -> None:
            self._for(study, trial).before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._for(study, trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(study, trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(study, trial).sample_independent(
                study, trial, param_name, param_distribution
            )

        def after_trial(self, study, trial, state, values) -> None:
            self._for(study, trial).after_trial(study, trial, state, values)
            self.chosen.pop(trial.number, None)

        def reseed_rng(self) -> None:
            self.qmc.reseed_rng()
            self.tpe.reseed_rng()

    return QmcThenTpe()
