"""Your own model: custom problems built by a factory (factories in tests/factories.py)."""

import numpy as np
import pytest

from lambda_hat.problems import custom
from lambda_hat.problems.optimum import OptimumError
from lambda_hat.problems.specs import ProblemSpec, load_problem_set
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run as run_reference

QUICK = ReferenceConfig(num_warmup=100, num_draws=100, chunk_size=50, target_accept=0.8)


def builtin_classifier(n: int = 300) -> ProblemSpec:
    return ProblemSpec.model_validate(
        {"name": "clf", "model": {"family": "mlp", "widths": [2, 3, 3]},
         "data": {"n": n, "likelihood": "categorical"}}
    )  # fmt: skip


def custom_spec(factory: str, rows: int, **args) -> ProblemSpec:
    return ProblemSpec.model_validate(
        {"name": "mine", "model": {"family": "custom", "factory": factory, "args": args},
         "data": {"n": rows}}
    )  # fmt: skip


def test_a_custom_twin_of_a_built_in_problem_gives_the_same_reference():
    builtin = build_problem(builtin_classifier())
    twin = build_problem(custom_spec("tests.factories:builtin_twin", 300))
    assert twin.d == builtin.d and twin.pid != builtin.pid
    np.testing.assert_array_equal(twin.w_star, builtin.w_star)  # the factory's w*, as given
    assert pytest.approx(builtin.L0, rel=1e-12) == twin.L0
    ours, theirs = run_reference(builtin, QUICK), run_reference(twin, QUICK)
    assert ours.llc_ref == pytest.approx(theirs.llc_ref, rel=1e-9)


def test_the_pid_follows_the_args_and_the_data(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).normal(size=(8, 2)))
    first = custom_spec("tests.factories:from_file", 8, path=str(path)).pid
    assert custom_spec("tests.factories:from_file", 8, path=str(path)).pid == first
    np.save(path, np.random.default_rng(1).normal(size=(8, 2)))
    custom._load.cache_clear()  # a new process would read the file afresh
    assert custom_spec("tests.factories:from_file", 8, path=str(path)).pid != first
    assert (
        custom_spec("tests.factories:good", 10).pid
        != custom_spec("tests.factories:good", 11, n=11).pid
    )


def test_the_pid_follows_the_factorys_source(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    source = (
        "import numpy as np\nfrom tests.factories import good\ndef make():\n    return good(n=10)\n"
    )
    (tmp_path / "user_factory_edit.py").write_text(source)
    first = custom_spec("user_factory_edit:make", 10).pid
    (tmp_path / "user_factory_edit.py").write_text(source + "# an edit\n")
    custom._load.cache_clear()
    assert custom_spec("user_factory_edit:make", 10).pid != first


def test_a_given_w_star_is_checked_like_a_trained_one():
    with pytest.raises(OptimumError, match=r"problem mine .*gradient norm .* exceeds"):
        build_problem(custom_spec("tests.factories:unfinished_w_star", 10))
    trained = build_problem(custom_spec("tests.factories:good", 10))
    assert trained.grad_norm < 1e-8  # no w* given: trained from params


def test_the_example_factory_builds_and_is_documented():
    spec = load_problem_set("examples/my_model.yaml").problems[0]
    problem = build_problem(spec)
    assert problem.d == 17 and problem.arch.likelihood == "categorical"
    assert problem.grad_norm < spec.optimum.max_grad_norm


def test_the_tms_preset_is_a_factory_inside_the_package():
    first, second = load_problem_set("tms").problems
    problem = build_problem(first)
    assert problem.d == 6 * 2 + 6 and problem.arch.likelihood == "gaussian"
    assert problem.grad_norm < first.optimum.max_grad_norm  # a true minimum of the MSE
    assert second.pid != first.pid and load_problem_set("tms").problems[0].pid == first.pid


def test_float32_parameters_are_sampled_in_float64():
    problem = build_problem(custom_spec("tests.factories:float32_params", 10))
    assert problem.w_star.dtype == np.float64
    assert problem.arch.model.unravel(problem.w_star)["w"].dtype == np.float64
    assert problem.grad_norm < 1e-8  # trained in float64 to the usual tolerance
