"""The exact finite-n LLC oracle (lambda_hat.problems.exact) against brute-force quadrature over
every parameter, on tiny cases where brute force is affordable."""

import numpy as np
import pytest

from lambda_hat.problems.exact import Grid, exact_llc, regular_llc, rrr_llc
from lambda_hat.problems.targets import build_problem

from .conftest import make_spec


def brute_force_llc(xx, xy, yy, sigma, n_beta, gamma, a_star, b_star, half=8.0, points=61):
    """E_π[nβ(L_n − L0)] with every entry of A and B on one uniform grid (trapezoid rule:
    spectrally accurate for a smooth integrand that has decayed at the edges)."""
    shapes = [a_star.shape, b_star.shape]
    centre = np.concatenate([a_star.ravel(), b_star.ravel()])
    axes = [np.linspace(c - half, c + half, points) for c in centre]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(centre))
    size_a = a_star.size
    a = mesh[:, :size_a].reshape(-1, *shapes[0])
    b = mesh[:, size_a:].reshape(-1, *shapes[1])
    w = b @ a
    loss = (
        0.5
        * (np.einsum("kij,jl,kil->k", w, xx, w) - 2 * np.einsum("kij,ji->k", w, xy) + yy)
        / sigma**2
    )
    w0 = b_star @ a_star
    L0 = 0.5 * (np.sum((w0 @ xx) * w0) - 2 * np.sum(w0.T * xy) + yy) / sigma**2
    log_p = -n_beta * loss - 0.5 * gamma * np.sum((mesh - centre) ** 2, axis=1)
    weight = np.exp(log_p - log_p.max())
    return float(np.sum(weight * n_beta * (loss - L0)) / np.sum(weight))


CASES = [
    # (M, H, N, teacher rank): A is H×M with H·M ≤ 2
    (1, 1, 1, 0),
    (1, 1, 2, 1),
    (1, 2, 1, 0),
    (2, 1, 1, 1),
]


@pytest.mark.parametrize(("m", "h", "n_out", "rank"), CASES)
def test_oracle_matches_brute_force_over_all_parameters(m, h, n_out, rank):
    rng = np.random.default_rng(m * 100 + h * 10 + n_out + rank)
    x = rng.normal(size=(40, m))
    a_star = rng.normal(size=(h, m)) * rank
    b_star = rng.normal(size=(n_out, h)) * rank
    y = x @ (b_star @ a_star).T + 2.0 * rng.normal(size=(40, n_out))
    xx, xy, yy = x.T @ x / 40, x.T @ y / 40, float(np.sum(y**2) / 40)
    # A wide posterior (small nβ, large σ) keeps the brute-force grid affordable.
    common = {"sigma": 2.0, "n_beta": 10.0, "gamma": 1.0, "a_star": a_star, "b_star": b_star}
    oracle = rrr_llc(xx, xy, yy, **common)
    points = {2: 801, 3: 161, 4: 61}[a_star.size + b_star.size]
    brute = brute_force_llc(xx, xy, yy, points=points, **common)
    assert oracle == pytest.approx(brute, rel=1e-6), (oracle, brute)
    assert rrr_llc(xx, xy, yy, grid=Grid().refined(), **common) == pytest.approx(oracle, rel=1e-9)


def test_regular_oracle_is_the_gaussian_answer():
    spec = make_spec(model={"family": "dln", "widths": [3, 2]}, teacher={"rank": 2})
    problem = build_problem(spec)
    x = np.asarray(problem.data.x)
    hessian = np.kron(np.eye(2), x.T @ x / x.shape[0]) / float(problem.data.sigma) ** 2
    assert exact_llc(problem) == pytest.approx(regular_llc(hessian, problem.n_beta, 1.0))
    assert exact_llc(problem) == pytest.approx(3.0, abs=0.02)  # d/2, shrunk < 1 % by γ


def test_oracle_converges_on_a_realistic_case_and_sits_off_lambda():
    # n = 1e4, a rank-0 teacher: the finite-n LLC differs from λ; refining the grid moves
    # the answer by far less than any sampler's error bar.
    spec = make_spec(
        model={"family": "rrr", "m_in": 1, "hidden": 2, "n_out": 3},
        teacher={"rank": 0},
        data={"n": 10_000},
    )
    problem = build_problem(spec)
    value = exact_llc(problem)
    assert value is not None
    from lambda_hat.problems.exact import rrr_llc_converged
    from lambda_hat.problems.models import unflatten
    from lambda_hat.problems.posterior import moments_of

    moments = moments_of(problem.data)
    (a, _), (b, _) = unflatten(problem.w_star, problem.arch.layers)
    finer, change = rrr_llc_converged(
        np.asarray(moments.xx), np.asarray(moments.xy), float(moments.yy),
        sigma=float(moments.sigma), n_beta=problem.n_beta, gamma=problem.gamma,
        a_star=np.asarray(a), b_star=np.asarray(b), L0=problem.L0,
    )  # fmt: skip
    assert change < 1e-6 * finer and finer == pytest.approx(value, rel=1e-6)
    assert abs(value - float(problem.lambda_theory.lam)) > 0.01


def test_no_oracle_for_shapes_it_cannot_integrate():
    wide = make_spec(model={"family": "rrr", "m_in": 3, "hidden": 2, "n_out": 3})
    assert exact_llc(build_problem(wide)) is None


@pytest.mark.parametrize(
    ("shape", "rank", "n"), [((1, 2, 3), 0, 500), ((1, 2, 3), 1, 2000), ((2, 1, 3), 0, 1000)]
)
def test_the_default_reference_agrees_with_the_oracle_within_its_error_bar(shape, rank, n):
    from lambda_hat.samplers.configs import DEFAULT_REFERENCE
    from lambda_hat.samplers.hmc_reference import run

    m, h, n_out = shape
    problem = build_problem(
        make_spec(
            model={"family": "rrr", "m_in": m, "hidden": h, "n_out": n_out},
            teacher={"rank": rank},
            data={"n": n},
        )
    )
    exact = exact_llc(problem)
    reference = run(problem, DEFAULT_REFERENCE)
    z = (reference.llc_ref - exact) / reference.se_ref
    assert abs(z) <= 3, (reference.llc_ref, reference.se_ref, exact)
    assert reference.quality != "untrusted", reference.quality_reasons


def test_the_two_quadratures_agree_on_the_scalar_chain_ab_x():
    # f = ab·x: the RRR oracle (B in closed form, A on Gauss–Legendre panels) and the
    # scalar-chain quadrature (b in closed form, a on a uniform grid) are different
    # computations of one number.
    from lambda_hat.problems.exact import scalar_chain_llc

    problem = build_problem(make_spec(model={"family": "dln", "widths": [1, 1, 1]}))
    assert exact_llc(problem) == pytest.approx(scalar_chain_llc(problem, 20001), rel=1e-7)
    chain = build_problem(make_spec(model={"family": "dln", "widths": [1, 1, 1, 1]}))
    assert exact_llc(chain) == pytest.approx(scalar_chain_llc(chain, 1501), rel=1e-3)
