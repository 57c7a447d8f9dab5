"""The search itself: what each study's sampler proposes (Optuna, no Prefect)."""

from concurrent.futures import ThreadPoolExecutor

import optuna

from lambda_hat.tuning.storage import open_study

from .test_tuning import first_done, make_driver

optuna.logging.set_verbosity(optuna.logging.WARNING)


def first_configurations(url: str, pid: str, trials: int = 3) -> list[dict]:
    """The configurations the driver proposes to the study ``<pid>:sgld`` of ``url``."""
    study = open_study(url, f"{pid}:sgld")
    with ThreadPoolExecutor(1) as pool:
        make_driver(study, pid=pid, repeats=1, pruner="none").run(
            trials,
            batch=1,
            submit=lambda plan: pool.submit(lambda: {"status": "ok", "llc_hat": 3.0}),
            first_done=first_done,
        )
    return [trial.params for trial in sorted(study.trials, key=lambda t: t.number)]


def test_the_studies_of_a_campaign_explore_different_configurations(tmp_path):
    # Once, every problem's study was seeded alike and drew the same start-up configurations.
    url = f"sqlite:///{tmp_path}/campaign.db"
    first, second = first_configurations(url, "p_one"), first_configurations(url, "p_two")
    assert all(a != b for a, b in zip(first, second, strict=True)), (first, second)


def test_the_same_campaign_run_again_proposes_the_same_configurations(tmp_path):
    once = first_configurations(f"sqlite:///{tmp_path}/once.db", "p_one")
    again = first_configurations(f"sqlite:///{tmp_path}/again.db", "p_one")
    assert once == again
