"""Hyperparameters in units that transfer: the curvature scale h and per-curvature steps."""

import numpy as np
import pytest

from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.run_method import run_trial

# Linear regression (a one-layer DLN): a regular model, whose Hessian of
# L_n = ‖y − Wx‖²/(2σ²) averaged over rows is (XᵀX/n) ⊗ I / σ², the same at every w.
REGULAR = ProblemSpec.model_validate(
    {"name": "linear", "model": {"family": "dln", "widths": [3, 2]}, "data": {"n": 200},
     "teacher": {"rank": 2}}
)  # fmt: skip
SGLD = {"num_steps": 300, "num_chains": 2, "batch_size": 32, "thinning": 5}


def test_the_curvature_of_a_regular_model_is_its_hessians_largest_eigenvalue():
    problem = build_problem(REGULAR)
    x, sigma = np.asarray(problem.data.x), float(problem.data.sigma)
    exact = np.linalg.eigvalsh(x.T @ x / len(x))[-1] / sigma**2
    assert problem.hessian_max_eig == pytest.approx(exact, rel=1e-8)


def test_a_step_per_curvature_is_the_absolute_step_times_one_over_n_beta_h():
    problem = build_problem(REGULAR)
    per_curvature = run_trial(
        problem, "sgld", {**SGLD, "step_size": 0.1, "step_size_scale": "per_curvature"},
        budget_sec=None, seed=3,
    )  # fmt: skip
    absolute_step = 0.1 / (problem.n_beta * problem.hessian_max_eig)
    absolute = run_trial(problem, "sgld", {**SGLD, "step_size": absolute_step}, budget_sec=None,
                         seed=3)  # fmt: skip
    other = run_trial(problem, "sgld", {**SGLD, "step_size": 2 * absolute_step},
                      budget_sec=None, seed=3)  # fmt: skip
    assert per_curvature.status == absolute.status == "ok"
    assert per_curvature.llc_hat == pytest.approx(absolute.llc_hat, rel=1e-9)
    assert other.llc_hat != pytest.approx(absolute.llc_hat, rel=1e-6)  # the step matters
