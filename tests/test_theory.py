from fractions import Fraction
from itertools import pairwise

import pytest

from lambda_hat.problems import theory


@pytest.mark.parametrize(
    ("widths", "r", "expected"),
    [
        ([5, 3, 5], 0, Fraction(13, 2)),
        ([5, 4, 5], 0, Fraction(8)),
        ([4, 3, 8], 0, Fraction(6)),
        ([10, 10, 10, 10], 0, Fraction(67, 2)),
    ],
)
def test_dln_worked_examples(widths, r, expected):
    assert theory.dln(widths, r).lam == expected


def test_rrr_worked_example_from_environment_notes():
    # RRR M=4, H=3, N=5, r=1: λ = 7 (case 1, M+H+N+r odd → +1/8, multiplicity 2).
    assert theory.rrr(4, 3, 5, 1) == theory.LearningCoefficient(Fraction(7), 2)


@pytest.mark.parametrize(
    ("m", "h", "n", "r", "expected"),
    [
        (4, 3, 8, 0, Fraction(6)),  # M+H < N+r: (HM − Hr + Nr)/2
        (8, 3, 4, 0, Fraction(6)),  # N+H < M+r: (HN − Hr + Mr)/2
        (3, 8, 4, 0, Fraction(6)),  # M+N < H+r: MN/2
        (2, 1, 2, 1, Fraction(3, 2)),  # full rank H = r: regular, d/2 − redundancy
    ],
)
def test_rrr_each_case(m, h, n, r, expected):
    assert theory.rrr(m, h, n, r).lam == expected


def test_rrr_equals_three_layer_dln_for_all_small_shapes():
    checked = 0
    for m in range(1, 9):
        for h in range(1, 9):
            for n in range(1, 9):
                for r in range(min(m, h, n) + 1):
                    assert theory.rrr(m, h, n, r) == theory.dln([m, h, n], r), (m, h, n, r)
                    checked += 1
    assert checked > 1500


@pytest.mark.parametrize(("n_in", "n_out"), [(1, 1), (4, 3), (7, 2)])
def test_single_layer_dln_is_regular(n_in, n_out):
    # One weight matrix, no hidden layer: identifiable, λ = d/2 whatever the true rank.
    for r in range(min(n_in, n_out) + 1):
        assert theory.dln([n_in, n_out], r) == theory.regular(n_in * n_out)


@pytest.mark.parametrize("depth", [2, 3, 4, 6])
def test_scalar_chain_matches_the_monomial_threshold(depth):
    # widths [1]*(depth+1), r = 0: K(w) = (w_1⋯w_depth)², already normal crossing, λ = 1/2.
    # An independent check of the DLN formula beyond three layers.
    assert theory.dln([1] * (depth + 1), 0).lam == Fraction(1, 2)


@pytest.mark.parametrize("n", [3, 4, 7])
def test_bottleneck_of_width_one_matches_the_blown_up_threshold(n):
    # widths [n, 1, 1, n], r = 0: K ~ |a|²·b²·|c|² with |a|, |c| radii in R^n: λ = 1/2, m = 1.
    assert theory.dln([n, 1, 1, n], 0) == theory.LearningCoefficient(Fraction(1, 2), 1)


def test_multiplicity_is_not_claimed_beyond_three_layers():
    assert theory.dln([10, 10, 10, 10], 0).multiplicity is None
    assert theory.dln([5, 3, 5], 0).multiplicity == 2


def test_regular_is_half_the_dimension():
    assert theory.regular(27).lam == Fraction(27, 2)
    assert float(theory.regular(3)) == 1.5


def test_deeper_is_never_above_regular_count():
    # λ ≤ d/2 for every DLN (a singular model never has more than half its dimension).
    for widths in ([3, 2, 2, 3], [4, 4, 3, 4], [5, 2, 5, 2, 5], [2, 6, 6, 6, 2]):
        d = sum(a * b for a, b in pairwise(widths))
        for r in range(min(widths) + 1):
            assert theory.dln(widths, r).lam <= Fraction(d, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: theory.rrr(3, 2, 3, 3), "rank r must be in [0, 2]"),
        (lambda: theory.dln([3], 0), "at least 2 entries"),
        (lambda: theory.dln([3, 0, 3], 0), "widths must be >= 1"),
        (lambda: theory.regular(-1), "d must be >= 0"),
    ],
)
def test_invalid_arguments(call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call()
