import pytest

from lambda_hat import ids
from lambda_hat.problems.specs import ProblemSpec

from .conftest import make_spec

BASE = {
    "name": "a",
    "model": {"family": "rrr", "m_in": 3, "hidden": 2, "n_out": 3},
    "teacher": {"rank": 1},
    "data": {"n": 500, "noise_sigma": 0.5},
}


def test_pid_shape():
    assert ids.validate_id(make_spec().pid).startswith("p_")
    assert len(make_spec().pid) == 14


def test_key_order_does_not_matter():
    reordered = {
        "data": {"noise_sigma": 0.5, "n": 500},
        "teacher": {"rank": 1},
        "model": {"n_out": 3, "hidden": 2, "family": "rrr", "m_in": 3},
        "name": "a",
    }
    assert ProblemSpec.model_validate(reordered).pid == ProblemSpec.model_validate(BASE).pid


def test_int_and_float_spellings_agree():
    as_floats = {**BASE, "data": {"n": 500, "noise_sigma": 0.5, "input": {"scale": 1}}}
    as_ints = {**BASE, "data": {"n": 500, "noise_sigma": 0.5, "input": {"scale": 1.0}}}
    assert ProblemSpec.model_validate(as_floats).pid == ProblemSpec.model_validate(as_ints).pid
    assert ids.stable_hash({"x": [1, 2.0]}) == ids.stable_hash({"x": [1.0, 2]})


def test_defaults_written_out_or_omitted_agree():
    explicit = {**BASE, "posterior": {"beta0": 1.0, "gamma": 1.0}, "seed": 0}
    assert ProblemSpec.model_validate(explicit).pid == ProblemSpec.model_validate(BASE).pid


def test_name_is_a_label_not_part_of_the_problem():
    assert make_spec(name="x").pid == make_spec(name="y").pid


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"data": {"n": 501}},
        {"data": {"n": 500, "noise_sigma": 0.25}},
        {"data": {"n": 500, "input": {"dist": "uniform"}}},
        {"teacher": {"rank": 2}},
        {"model": {"family": "rrr", "m_in": 3, "hidden": 3, "n_out": 3}},
        {"model": {"family": "dln", "widths": [3, 2, 3]}},
        {"posterior": {"gamma": 2.0}},
        {"posterior": {"beta0": 0.5}},
        {"optimum": {"init": "random"}},
    ],
)
def test_any_real_change_gives_another_pid(change):
    assert make_spec(**change).pid != make_spec().pid


def test_floats_that_differ_hash_differently():
    assert ids.stable_hash({"x": 0.1}) != ids.stable_hash({"x": 0.1000000001})
    with pytest.raises(ValueError, match="non-finite"):
        ids.stable_hash({"x": float("nan")})


def test_trial_id_depends_on_every_input():
    args = dict(
        pid="p_abc", method="sgld", hyperparams={"eta": 1e-4}, seed=0, budget=10, version="v"
    )
    base = ids.run_id(**args)
    assert base.startswith("r_") and base == ids.run_id(**args)
    for key, other in [
        ("pid", "p_abd"),
        ("method", "mclmc"),
        ("hyperparams", {"eta": 2e-4}),
        ("seed", 1),
        ("budget", 11),
        ("version", "w"),
    ]:
        assert ids.run_id(**{**args, key: other}) != base, key


def test_code_version_has_package_version_and_config_hash():
    version = ids.code_version({"num_draws": 10})
    assert version.startswith("0.1.0+")
    assert version != ids.code_version({"num_draws": 11})


@pytest.mark.parametrize("bad", ["../etc", "p_ABC", "p/x", "", "p x", "p-1"])
def test_unsafe_ids_are_rejected(bad):
    with pytest.raises(ValueError, match=r"allowed characters are \[a-z0-9_\]"):
        ids.validate_id(bad)
