"""Sharded references: the chains of one reference as separate runs, pooled as one."""

import numpy as np
import pytest
from pydantic import ValidationError

from lambda_hat.problems.targets import build_problem
from lambda_hat.reference.record import reference_code_version
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run, sample
from lambda_hat.samplers.reference_shards import load_shard, save_shard, shard_config
from lambda_hat.samplers.reference_summary import summarize

from .conftest import make_spec

FAST = ReferenceConfig(num_warmup=300, num_draws=400, chunk_size=100, target_accept=0.8)


def test_a_sharded_reference_agrees_with_an_unsharded_one(tmp_path):
    problem = build_problem(make_spec())
    whole = run(problem, FAST)
    sharded = FAST.model_copy(update={"shards": 4})
    paths = []
    for index in range(4):  # what four hmc-reference-shard tasks do, one after the other
        paths.append(tmp_path / f"shard-{index}.npz")
        save_shard(paths[-1], sample(problem, shard_config(sharded, index)))
    parts = [load_shard(path) for path in paths]
    pooled = summarize(problem, sharded, parts)
    assert pooled.n_chains == 4 and pooled.n_draws == 4 * 400
    assert pooled.quality != "untrusted", pooled.quality_reasons
    combined = np.hypot(whole.se_ref, pooled.se_ref)
    assert abs(pooled.llc_ref - whole.llc_ref) < 3 * combined, (pooled.llc_ref, whole.llc_ref)
    # The pooled estimate is that of the four chains' draws together: R-hat across shards.
    np.testing.assert_array_equal(
        np.concatenate([part.tally.losses for part in parts]),
        np.concatenate([load_shard(path).tally.losses for path in paths]),
    )
    assert pooled.rhat < 1.05 and pooled.grad_evals == sum(
        int(part.warmup_grads.sum()) + part.tally.grad_evals for part in parts
    )
    assert reference_code_version(sharded) != reference_code_version(FAST)


def test_shards_must_divide_the_chains():
    with pytest.raises(ValidationError, match="shards: must divide num_chains=4, got 3"):
        ReferenceConfig(shards=3)


def test_a_one_chain_shard_can_aim_at_a_precision_target():
    # Its SE comes from its two halves (a single chain has no R-hat of its own).
    problem = build_problem(make_spec())
    config = FAST.model_copy(update={"num_draws": 100, "shards": 4, "target_rel_se": 0.05})
    part = sample(problem, shard_config(config, 0))
    assert part.tally.losses.shape[0] == 1 and part.tally.losses.shape[1] >= 100
