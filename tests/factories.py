"""Custom-problem factories for the tests: one good, and one for each way to be wrong."""

import jax.numpy as jnp
import numpy as np

from lambda_hat.problems.custom import CustomProblem


def linear(params, x):
    return x @ params["w"]


def good(n: int = 10, w_star=None) -> CustomProblem:
    x = np.random.default_rng(0).normal(size=(n, 2))
    y = x @ np.array([[1.0], [0.0]]) + 0.1 * np.random.default_rng(1).normal(size=(n, 1))
    return CustomProblem(apply=linear, params={"w": jnp.zeros((2, 1))}, x=x, y=y,
                         sigma=0.5, w_star=w_star)  # fmt: skip


def returns_a_dict():
    return {"apply": linear}


def mismatched_rows():
    problem = good()
    return CustomProblem(apply=linear, params=problem.params, x=problem.x, y=problem.y[:9])


def nan_inputs():
    problem = good()
    x = problem.x.copy()
    x[3, 1] = np.nan
    return CustomProblem(apply=linear, params=problem.params, x=x, y=problem.y)


def broken_apply():
    def apply(params, x):
        return x @ params["missing"]

    problem = good()
    return CustomProblem(apply=apply, params=problem.params, x=problem.x, y=problem.y)


def raises():
    raise RuntimeError("cannot find my checkpoint")


def unfinished_w_star():
    return good(w_star={"w": jnp.array([[0.3], [0.2]])})  # far from the least-squares fit


def builtin_twin(n: int = 300) -> CustomProblem:
    """The built-in classifier of tests/test_custom.py, rebuilt as a custom problem."""
    from lambda_hat.problems.data import make_dataset
    from lambda_hat.problems.models import forward, model_layers
    from lambda_hat.problems.targets import build_problem

    from .test_custom import builtin_classifier

    spec = builtin_classifier(n)
    data, layers = make_dataset(spec), model_layers(spec)
    return CustomProblem(
        apply=lambda w, x: forward(w, x, layers, "tanh"),
        params=jnp.zeros(int(sum(a.n_in * a.n_out + a.n_out for a in layers))),
        x=data.x,
        y=data.y.argmax(axis=1),
        likelihood="categorical",
        w_star=build_problem(spec).w_star,
    )


def from_file(path: str) -> CustomProblem:
    """Data read from a file: editing the file must change the pid."""
    x = np.load(path)
    return CustomProblem(apply=linear, params={"w": jnp.zeros((2, 1))}, x=x, y=x[:, :1])


def float32_params() -> CustomProblem:
    """Parameters as a float32 model keeps them (Flax's default)."""
    problem = good()
    params = {"w": jnp.zeros((2, 1), dtype=jnp.float32)}
    return CustomProblem(apply=linear, params=params, x=problem.x, y=problem.y, sigma=0.5)
