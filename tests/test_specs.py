import pytest
from pydantic import ValidationError

from lambda_hat.problems.specs import SpecError, load_problem_set, parse_problem_set

GOOD = {
    "name": "ok",
    "model": {"family": "rrr", "m_in": 3, "hidden": 2, "n_out": 3},
    "teacher": {"rank": 1},
    "data": {"n": 100},
}
MLP = {
    "name": "mlp",
    "model": {"family": "mlp", "widths": [2, 4, 1], "activation": "tanh"},
    "data": {"n": 100},
}


def with_(base, **changes):
    return {**base, **changes}


INVALID = [
    (with_(MLP, model={"family": "mlp", "widths": []}), "problems.0.model.mlp.widths"),
    (with_(MLP, model={"family": "mlp", "widths": [3]}), "problems.0.model.mlp.widths"),
    (with_(MLP, model={"family": "mlp", "widths": [2, 0, 1]}), "problems.0.model.mlp.widths"),
    (with_(MLP, model={"family": "mlp", "widths": [2, 1], "activation": "sigmoid"}), "activation"),
    (with_(GOOD, data={"n": 0}), "problems.0.data.n"),
    (with_(GOOD, data={"n": 1}), "problems.0.data.n"),
    (with_(GOOD, data={"n": 100, "noise_sigma": -0.1}), "problems.0.data.noise_sigma"),
    (with_(GOOD, data={"n": 100, "input": {"dist": "cauchy"}}), "problems.0.data.input.dist"),
    (with_(GOOD, data={"n": 100, "input": {"scale": 0}}), "problems.0.data.input.scale"),
    (with_(GOOD, teacher={"rank": 3}), "teacher.rank"),
    (with_(GOOD, teacher={"rank": -1}), "problems.0.teacher.rank"),
    (with_(GOOD, teacher={}), "teacher.rank"),
    (with_(MLP, teacher={"rank": 1}), "teacher.rank"),
    (with_(MLP, teacher={"widths": [3, 4, 1]}), "teacher.widths"),
    (with_(GOOD, model={"family": "cnn", "widths": [2, 2]}), "problems.0.model"),
    (with_(GOOD, model={"family": "rrr", "m_in": 0, "hidden": 2, "n_out": 3}), "model.rrr.m_in"),
    (with_(GOOD, posterior={"gamma": -1}), "problems.0.posterior.gamma"),
    (with_(GOOD, posterior={"beta0": 0}), "problems.0.posterior.beta0"),
    (with_(GOOD, seed=-3), "problems.0.seed"),
    (with_(GOOD, name="../escape"), "problems.0.name"),
    (with_(GOOD, colour="red"), "problems.0.colour: unknown field"),
    (
        with_(GOOD, data={"n": 100, "nosie_sigma": 0.5}),
        "problems.0.data.nosie_sigma: unknown field",
    ),
]


@pytest.mark.parametrize(("spec", "field"), INVALID)
def test_invalid_spec_is_rejected_with_one_line_naming_the_field(spec, field):
    with pytest.raises(SpecError) as raised:
        parse_problem_set({"problems": [spec]})
    message = str(raised.value)
    assert field in message
    assert "\n" not in message


def test_the_message_for_an_unknown_activation_lists_allowed_values():
    spec = with_(MLP, model={"family": "mlp", "widths": [2, 1], "activation": "sigmoid"})
    with pytest.raises(SpecError, match="'tanh', 'relu' or 'gelu'.*got 'sigmoid'"):
        parse_problem_set([spec])


def test_empty_problem_set_and_duplicate_names_are_rejected():
    with pytest.raises(SpecError, match="problems: .*at least one problem"):
        parse_problem_set({"problems": []})
    with pytest.raises(SpecError, match="duplicate problem names: \\['ok'\\]"):
        parse_problem_set([GOOD, GOOD])
    with pytest.raises(SpecError, match="expected a mapping"):
        parse_problem_set("just a string")


def test_specs_are_immutable():
    spec = parse_problem_set([GOOD]).problems[0]
    with pytest.raises(ValidationError):
        spec.seed = 3


def test_yaml_file_loads_and_malformed_yaml_names_the_line(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(
        "problems:\n  - name: a\n    model: {family: dln, widths: [2, 2, 2]}\n"
        "    teacher: {rank: 1}\n    data: {n: 50}\n"
    )
    assert load_problem_set(good).problems[0].widths == (2, 2, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("problems:\n  - name: a\n    model: {family: dln, widths: [2, 2\n")
    with pytest.raises(SpecError, match=r"bad.yaml: malformed YAML at line \d+"):
        load_problem_set(bad)


def test_yaml_is_safe_loaded(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("problems: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SpecError, match="malformed YAML"):
        load_problem_set(evil)


def test_missing_file_names_the_presets():
    with pytest.raises(
        SpecError,
        match="no such file or preset 'nope.yaml' "
        "\\(presets: smoke, default, dln-family, dln-family-holdout, dln-ladder, digits, tms\\)",
    ):
        load_problem_set("nope.yaml")


@pytest.mark.parametrize("preset", ["smoke", "default"])
def test_presets_load(preset):
    problems = load_problem_set(preset).problems
    assert problems and len({p.pid for p in problems}) == len(problems)
