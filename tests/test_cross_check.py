"""The second, independent sampler (Metropolis-adjusted MCLMC) and its part in the verdict."""

import pytest

from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.problems.targets import build_problem
from lambda_hat.reference.quality import judge, rejudge
from lambda_hat.reference.record import reference_code_version
from lambda_hat.samplers import adjusted_mclmc
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run as run_reference

FAST = ReferenceConfig(num_warmup=300, num_draws=400, chunk_size=100, target_accept=0.8)
HEALTHY = {"rhat": 1.0, "ess": 1600.0, "divergences": 0, "transitions": 1600,
           "budget_exhausted": False, "halves": (4.2, 0.1, 4.25, 0.1)}  # fmt: skip


def classifier(beta0: float = 1.0) -> ProblemSpec:
    return ProblemSpec.model_validate(
        {"name": "clf", "model": {"family": "mlp", "widths": [2, 3, 3]},
         "data": {"n": 300, "likelihood": "categorical"}, "posterior": {"beta0": beta0}}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("other", "verdict"), [(4.3, "trusted"), (4.75, "warn"), (5.0, "untrusted")]
)
def test_the_verdict_compares_the_two_samplers_in_combined_se(other, verdict):
    # Reference 4.2 ± 0.1, second sampler ± 0.1: combined SE 0.141 (z 0.7, 3.9, 5.7).
    quality, reasons = judge(**HEALTHY, second=(4.2, 0.1, other, 0.1))
    assert quality == verdict, reasons
    assert ("second sampler disagrees" in " ".join(reasons)) == (verdict != "trusted")


def test_a_cross_checked_reference_records_both_and_agrees():
    problem = build_problem(classifier())
    result = run_reference(problem, FAST.model_copy(update={"cross_check": True}))
    other = result.cross_check
    assert other["algorithm"] == "adjusted_mclmc" and other["rhat"] < 1.05
    z = abs(result.llc_ref - other["llc"]) / (result.se_ref**2 + other["se"] ** 2) ** 0.5
    assert z < 3, (result.llc_ref, result.se_ref, other)
    assert result.quality != "untrusted", result.quality_reasons
    # On only when asked: the check enters the cache key, and off leaves the key as it was.
    assert reference_code_version(FAST) != reference_code_version(
        FAST.model_copy(update={"cross_check": True})
    )


def test_a_reference_of_the_wrong_posterior_is_caught_only_by_the_second_sampler():
    # A deliberately broken reference: NUTS, healthy by its own diagnostics, sampled the
    # posterior at β0 = 0.5 instead of 1 (what a wrong temperature or a stale record
    # would give). Only a second sampler of the right posterior can tell.
    right = build_problem(classifier())
    wrong = run_reference(build_problem(classifier(beta0=0.5)), FAST)
    assert wrong.quality != "untrusted"
    record = wrong.model_dump(mode="json")
    record["cross_check"] = adjusted_mclmc.run(
        right, num_chains=4, num_tune=600, num_draws=400, seed=1
    )
    quality, reasons = rejudge(record)
    assert quality == "untrusted" and "second sampler disagrees" in " ".join(reasons)
