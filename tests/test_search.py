"""The search itself: what each study's sampler proposes (Optuna, no Prefect)."""

from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest

from lambda_hat.tuning.search_samplers import SEARCH_SAMPLERS
from lambda_hat.tuning.search_space import load_methods
from lambda_hat.tuning.storage import open_study
from lambda_hat.tuning.warm_start import WarmStartError, warm_start_params

from .test_tuning import first_done, make_driver

optuna.logging.set_verbosity(optuna.logging.WARNING)


def first_configurations(
    url: str, pid: str, trials: int = 3, warm_start=None, sampler: str = "tpe"
) -> list[dict]:
    """The configurations the driver proposes to the study ``<pid>:sgld`` of ``url``."""
    study = open_study(url, f"{pid}:sgld", sampler=sampler)
    driver = make_driver(study, pid=pid, repeats=1, pruner="none", warm_start=warm_start,
                         sampler=sampler)  # fmt: skip
    with ThreadPoolExecutor(1) as pool:
        driver.run(
            trials,
            batch=1,
            submit=lambda plan: pool.submit(lambda: {"status": "ok", "llc_hat": 3.0}),
            first_done=first_done,
        )
    return [trial.params for trial in sorted(study.trials, key=lambda t: t.number)]


@pytest.mark.parametrize("sampler", SEARCH_SAMPLERS)
def test_the_studies_of_a_campaign_explore_different_configurations(tmp_path, sampler):
    # Once, every problem's study was seeded alike and drew the same start-up configurations.
    url = f"sqlite:///{tmp_path}/campaign.db"
    first = first_configurations(url, "p_one", sampler=sampler)
    second = first_configurations(url, "p_two", sampler=sampler)
    assert all(a != b for a, b in zip(first, second, strict=True)), (first, second)


@pytest.mark.parametrize("sampler", SEARCH_SAMPLERS)
def test_the_same_campaign_run_again_proposes_the_same_configurations(tmp_path, sampler):
    once = first_configurations(f"sqlite:///{tmp_path}/once.db", "p_one", sampler=sampler)
    again = first_configurations(f"sqlite:///{tmp_path}/again.db", "p_one", sampler=sampler)
    assert once == again


RECIPE = """# a recipe file, as a recipe campaign writes it (artifacts/recipes/<set>-sgld.yaml)
methods:
  sgld:
    fixed: {step_size: 0.000123, batch_size: 64, decay_exponent: 0.25, num_steps: 3000,
            burn_in_frac: 0.2, thinning: 5, num_chains: 4, step_size_scale: absolute}
    space: {}
evidence: {study: "recipe-demo:sgld"}
"""


def test_a_warm_started_study_begins_with_the_recipe_and_only_a_new_one(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    start = warm_start_params(recipe, {"sgld": load_methods()["sgld"]})["sgld"]
    url = f"sqlite:///{tmp_path}/o.db"
    first = first_configurations(url, "p_one", trials=3, warm_start=start)
    assert first[0] == {"step_size": 0.000123, "batch_size": 64, "decay_exponent": 0.25}
    assert len(first) == 3 and len({str(c) for c in first}) == 3  # then the sampler's own
    assert first[1:] == first_configurations(f"sqlite:///{tmp_path}/cold.db", "p_one")[:2]
    # Resumed to 5 trials: the recipe is not enqueued again.
    again = first_configurations(url, "p_one", trials=5, warm_start=start)
    assert again[:3] == first and first[0] not in again[3:]


@pytest.mark.parametrize(
    "edit, message",
    [
        ("step_size: 0.000123", "methods.sgld.fixed.step_size: 0.5 is outside the search space"),
        ("batch_size: 64", "methods.sgld.fixed.batch_size: 48 is not one of [32, 64, 128, 256]"),
        ("decay_exponent: 0.25, ", "methods.sgld.fixed: no value for the tuned decay_exponent"),
        ("step_size_scale: absolute", "step_size_scale: 'per_nbeta' in the recipe but 'absolute'"),
    ],
)
def test_a_recipe_that_cannot_start_a_study_is_refused_in_one_line(tmp_path, edit, message):
    replacement = {
        "step_size: 0.000123": "step_size: 0.5",
        "batch_size: 64": "batch_size: 48",
        "decay_exponent: 0.25, ": "",
        "step_size_scale: absolute": "step_size_scale: per_nbeta",
    }[edit]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.replace(edit, replacement))
    with pytest.raises(WarmStartError) as refused:
        warm_start_params(recipe, {"sgld": load_methods()["sgld"]})
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert str(refused.value).startswith(f"--warm-start {recipe}: ")


def run_study(tmp_path, name: str, llc_hat, *, stop: bool, trials: int = 6) -> list:
    """A study of ``trials`` trials × 2 repeats whose runs return ``llc_hat(plan)``
    against a reference of 3.0 ± 0.1."""
    study = open_study(f"sqlite:///{tmp_path}/{name}.db", "p_test:sgld")
    driver = make_driver(study, repeats=2, pruner="none", stop_at_noise_floor=stop)
    with ThreadPoolExecutor(1) as pool:
        return driver.run(
            trials, batch=1, first_done=first_done,
            submit=lambda plan: pool.submit(lambda: {"status": "ok", "llc_hat": llc_hat(plan)}),
        )  # fmt: skip


def test_a_study_at_its_noise_floor_stops_and_one_above_it_does_not(tmp_path):
    # Every configuration within the noise of the reference (3.0 ± 0.1): the first trial's
    # mean |error| (0.05, SE 0.0) is under 2 × √(0.1² + 0²) = 0.2, so no trial can beat it
    # by more than the noise.
    def at_floor(plan):
        return 3.0 + (0.05 if plan.repeat == 0 else -0.05)

    assert len(run_study(tmp_path, "floor", at_floor, stop=True)) == 1
    assert len(run_study(tmp_path, "off", at_floor, stop=False)) == 6  # the stop is opt-in
    # 1.0 off on every seed: 5 SE above the floor, so the search goes on.
    assert len(run_study(tmp_path, "above", lambda plan: 4.0, stop=True)) == 6
