"""Search spaces as data: defaults, user overrides, validation, and Optuna suggestions."""

import optuna
import pytest

from lambda_hat.tuning.search_space import SearchSpaceError, load_methods


def test_defaults_cover_every_method_and_suggest_valid_configs():
    spaces = load_methods()
    assert set(spaces) == {"sgld", "psgld", "mclmc", "vi"}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for space in spaces.values():
        for _ in range(20):
            trial = study.ask(space.distributions())
            config = space.config(trial.params)  # validates
            for name, value in trial.params.items():
                assert getattr(config, name) == value
            for name, value in space.fixed.items():
                assert getattr(config, name) == value
            study.tell(trial, 0.0)


def test_a_user_file_overrides_one_method(tmp_path):
    path = tmp_path / "methods.yaml"
    path.write_text(
        "methods:\n"
        "  sgld:\n"
        "    space:\n"
        "      step_size: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\n"
    )
    spaces = load_methods(path)
    assert set(spaces["sgld"].space) == {"step_size"}
    assert spaces["sgld"].fixed == load_methods()["sgld"].fixed  # not given: kept
    assert spaces["vi"] == load_methods()["vi"]


BAD = [
    ("methods: [", "malformed YAML"),
    ("other: {}", "expected a mapping with 'methods:'"),
    ("methods:\n  nuts: {}", "methods.nuts: unknown method (allowed: mclmc, psgld, sgld, vi)"),
    (
        "methods:\n  sgld:\n    space:\n      step_size: {type: float, low: 1.0e-2, high: 1.0e-5}",
        "methods.sgld.space.step_size.float: low must be below high",
    ),
    (
        "methods:\n  sgld:\n    space:\n      step_size: {type: float, low: 0, high: 1, log: true}",
        "log scale needs low > 0",
    ),
    (
        "methods:\n  sgld:\n    space:\n      step_size: {type: uniform, low: 0.0, high: 0.1}",
        "methods.sgld.space.step_size: Input tag 'uniform' found using 'type' does not match",
    ),
    (
        "methods:\n  sgld:\n    space:\n      stepsize: {type: float, low: 1.0e-5, high: 0.1}",
        "methods.sgld: sgld.stepsize: unknown field",
    ),
    (
        "methods:\n  sgld:\n    space:\n      step_size: {type: float, low: 1.0e-5, high: 5.0}",
        "methods.sgld: sgld.step_size: Input should be less than or equal to 1",
    ),
    (
        "methods:\n  vi:\n    space:\n      family: {type: categorical, choices: [meanfield, x]}",
        "methods.vi: vi.family: Input should be 'meanfield' or 'fullrank'",
    ),
    (
        "methods:\n  vi:\n    space:\n      family: {type: categorical, choices: []}",
        "methods.vi.space.family.categorical.choices: Tuple should have at least 1 item",
    ),
    (
        "methods:\n  sgld:\n    fixed: {step_size: 1.0e-4}",
        "methods.sgld: ['step_size'] both fixed and tuned",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_search_space_files_fail_in_one_line(tmp_path, text, message):
    path = tmp_path / "methods.yaml"
    path.write_text(text)
    with pytest.raises(SearchSpaceError) as error:
        load_methods(path)
    assert message in str(error.value), str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_is_named():
    with pytest.raises(SearchSpaceError, match="methods: no such file 'nope.yaml'"):
        load_methods("nope.yaml")
