"""The HMC reference against exact answers, on CI-sized problems (n = 500, 4 × 400 draws)."""

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from lambda_hat.problems.exact import scalar_chain_llc
from lambda_hat.problems.targets import build_problem
from lambda_hat.reference.record import ReferenceResult, reference_code_version, write_reference
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run

from .conftest import make_spec

# One static configuration for every test here, so its kernels compile once per shape.
# target_accept 0.8 keeps these fast (the default, 0.99, costs about 3× the gradients);
# the default configuration is checked against the exact oracle in tests/test_exact.py.
FAST = ReferenceConfig(num_warmup=300, num_draws=400, chunk_size=100, target_accept=0.8)


def exact_gaussian_llc(problem) -> float:
    """E_π[nβ(L_n − L0)] for a linear model, where the posterior is exactly Gaussian.

    L_n(w) − L0 = ½(w − ŵ)ᵀH(w − ŵ) with H = (XᵀX/n ⊗ I_out)/σ², and w* = ŵ, so
    π = N(ŵ, (nβH + γI)⁻¹) and the LLC is ½·Σ_i nβh_i / (nβh_i + γ) over H's eigenvalues.
    """
    x = np.asarray(problem.data.x)
    sigma = float(problem.data.sigma)
    n_out = problem.data.y.shape[1]
    eigenvalues = np.linalg.eigvalsh(x.T @ x / x.shape[0]) / sigma**2
    h = np.repeat(eigenvalues, n_out)
    nbh = problem.n_beta * h
    return float(0.5 * np.sum(nbh / (nbh + problem.gamma)))


def test_regular_model_matches_the_exact_gaussian_answer():
    # One weight matrix 3→2 (d = 6): regular, λ = d/2 = 3. The posterior is Gaussian, so
    # the only error is Monte Carlo error: demand agreement within 4 standard errors.
    spec = make_spec(model={"family": "dln", "widths": [3, 2]}, teacher={"rank": 2})
    problem = build_problem(spec)
    result = run(problem, FAST)
    exact = exact_gaussian_llc(problem)
    assert abs(exact - 3.0) < 0.02  # γ = 1 shrinks d/2 by < 1 % at nβ ≈ 80
    assert abs(result.llc_ref - exact) < 4 * result.se_ref, (result.llc_ref, exact, result.se_ref)
    assert 0.0 < result.se_ref < 0.15
    assert result.rhat < 1.05
    assert result.lambda_theory == 3.0


def test_singular_rrr_lands_near_its_learning_coefficient():
    # RRR M=3, H=2, N=3, r=1: λ = 7/2. At finite n the tempered estimator differs from λ by
    # O(β·λ) terms (Watanabe's WBIC expansion; β = 1/log 500 = 0.16, so β·λ = 0.56), and one
    # dataset adds a seed-dependent fluctuation (measured here: sd 0.25 over 6 data seeds,
    # mean 3.24). We average 3 data seeds and accept |mean − λ| < β·λ: wide enough for the
    # honest finite-n bias, narrow enough to catch a wrong β, L0, a sampler stuck at w*
    # (LLC → 0), or a missing factor (2× off).
    estimates = []
    for seed in range(3):
        problem = build_problem(make_spec(seed=seed))
        result = run(problem, FAST)
        assert result.rhat < 1.05
        estimates.append(result.llc_ref)
    tolerance = problem.beta * 3.5
    assert abs(np.mean(estimates) - 3.5) < tolerance, estimates


def test_singular_deep_linear_network_lands_near_its_learning_coefficient():
    # DLN widths 3-2-2-3, r=1: λ = 3 (Aoyagi 2024). Same tolerance argument, one data seed.
    spec = make_spec(model={"family": "dln", "widths": [3, 2, 2, 3]})
    problem = build_problem(spec)
    result = run(problem, FAST)
    assert abs(result.llc_ref - 3.0) < problem.beta * 3.0 + 3 * result.se_ref, result.llc_ref


def test_same_seed_same_number_other_seed_other_number(tiny_spec):
    problem = build_problem(tiny_spec)
    first, second = run(problem, FAST), run(problem, FAST)
    assert first.llc_ref == second.llc_ref and first.grad_evals == second.grad_evals
    other = run(problem, FAST.model_copy(update={"seed": 1}))
    assert other.llc_ref != first.llc_ref


def test_plain_hmc_with_dense_mass_matrix_option():
    problem = build_problem(
        make_spec(model={"family": "dln", "widths": [3, 2]}, teacher={"rank": 2})
    )
    config = FAST.model_copy(
        update={"algorithm": "hmc", "num_integration_steps": 8, "mass_matrix": "dense"}
    )
    result = run(problem, config)
    assert result.algorithm == "hmc"
    assert abs(result.llc_ref - exact_gaussian_llc(problem)) < 4 * result.se_ref
    # HMC spends exactly num_integration_steps gradients per transition.
    steps = config.num_chains * (config.num_warmup + config.num_draws)
    assert result.grad_evals == steps * 8


def test_budget_is_respected_and_the_result_is_still_valid(tiny_spec, tmp_path):
    problem = build_problem(tiny_spec)
    # A short warmup, so that the budget cuts the sampling. Compile outside the budget
    # first, as a long-lived worker would have.
    short_warmup = FAST.model_copy(update={"num_warmup": 100})
    run(problem, short_warmup)
    long_run = short_warmup.model_copy(update={"num_draws": 1_000_000})
    result = run(problem, long_run, budget_sec=3.0)
    write_reference(tmp_path, tiny_spec, result)
    # Checked with the run's own clock, not a wall-clock constant that a loaded machine
    # breaks: it started no chunk that its slowest chunk so far said would end past the
    # budget, and the budget cut the sampling after many chunks.
    assert result.decision_margin_sec >= 0, result
    assert result.slowest_chunk_sec < 3.0  # many chunks ran: the budget cut the sampling
    assert result.budget_exhausted
    assert 0 < result.n_draws < 4 * 1_000_000
    assert math.isfinite(result.llc_ref) and result.se_ref > 0
    folder = tmp_path / "problems" / result.pid
    saved = json.loads((folder / "ref.json").read_text())
    assert ReferenceResult.model_validate(saved).model_dump() == result.model_dump()
    assert saved["name"] == tiny_spec.name and (folder / "spec.yaml").exists()
    assert not list(folder.glob("*.tmp"))


def test_the_budget_is_checked_between_warmup_chunks(tiny_spec):
    # A warmup far longer than the budget: it stops between chunks, not after all of it
    # (a 2 410-parameter MLP ran 368 s of compile and warmup on a 240 s budget).
    import time

    from lambda_hat.samplers.chunks import FINISH_SEC
    from lambda_hat.samplers.hmc_reference import BudgetError

    problem = build_problem(tiny_spec)
    endless = FAST.model_copy(update={"num_warmup": 1_000_000})
    with pytest.raises(BudgetError):
        run(problem, endless, budget_sec=2.0)  # compiles (the cache keeps it)
    started = time.perf_counter()
    with pytest.raises(BudgetError) as stopped:
        run(problem, endless, budget_sec=2.0)
    elapsed = time.perf_counter() - started
    message = str(stopped.value)
    assert "ended during the warmup, after" in message and "of 10000 chunks" in message
    slowest = stopped.value.slowest_chunk_sec
    # By the run's own clock: no chunk started that its slowest chunk said would end
    # past the budget, so the run ended within one slowest chunk of it.
    assert elapsed < 2.0 + slowest + FINISH_SEC, (elapsed, slowest)


@pytest.mark.parametrize(
    ("algorithm", "extra"), [("nuts", {}), ("hmc", {"num_integration_steps": 8})]
)
@pytest.mark.parametrize("mass_matrix", ["diagonal", "dense"])
def test_the_step_wise_adaptation_is_blackjax_window_adaptation(
    tiny_spec, algorithm, extra, mass_matrix
):
    # On a smooth 6-dimensional target, where no accept/reject sits on a rounding edge:
    # the same keys and schedule give bit for bit the same step size and mass matrix.
    import blackjax
    import jax
    import jax.numpy as jnp

    from lambda_hat.samplers import hmc_reference as h
    from lambda_hat.samplers.hmc_kernels import adaptation

    def logdensity(w):
        return -25.0 * jnp.sum((w[:3] * w[3:]) ** 2) - 0.5 * jnp.sum(w**2)

    config = FAST.model_copy(update={"algorithm": algorithm, "mass_matrix": mass_matrix})
    static = h._static(build_problem(tiny_spec), config)
    sampler = getattr(blackjax, algorithm)
    whole = blackjax.window_adaptation(
        sampler, logdensity, target_acceptance_rate=config.target_accept,
        is_mass_matrix_diagonal=mass_matrix == "diagonal", **extra,
    )  # fmt: skip
    key, position, steps = jax.random.key(3), jnp.full(6, 0.3), 250
    (expected, _) = jax.jit(lambda k: whole.run(k, position, num_steps=steps))(key)
    init, update, final = adaptation(static)
    kernel = sampler.build_kernel()

    def step(carry, xs):
        (state, adaptation), (k, stage) = carry, xs
        state, info = kernel(k, state, logdensity, adaptation.step_size,
                             adaptation.inverse_mass_matrix, **extra)  # fmt: skip
        return (state, update(adaptation, stage, state.position, info.acceptance_rate)), None

    schedule = blackjax.adaptation.window_adaptation.build_schedule(steps)
    carry = (sampler.init(position, logdensity), init(position, 1.0))
    for window in (slice(0, 100), slice(100, 200), slice(200, 250)):  # in chunks
        keys = jax.random.split(key, steps)[window]
        carry, _ = jax.jit(lambda c, k, s: jax.lax.scan(step, c, (k, s)))(
            carry, keys, schedule[window]
        )
    step_size, inverse_mass_matrix = final(carry[1])
    assert float(step_size) == float(expected.parameters["step_size"])
    np.testing.assert_array_equal(inverse_mass_matrix, expected.parameters["inverse_mass_matrix"])


def test_the_warmup_does_not_depend_on_where_its_chunks_end(tiny_spec):
    import jax

    from lambda_hat.samplers import hmc_reference as h

    problem = build_problem(tiny_spec)
    found = []
    for chunk_size in (400, 100, 30):  # one chunk; 100 + 100 + 50; eight, the last short
        config = FAST.model_copy(update={"num_warmup": 250, "chunk_size": chunk_size})
        static = h._static(problem, config)
        data, post = h.sampled_data(problem, config), problem.posterior_params()
        compiled = h._compiled(static, type(data), tuple(a.shape for a in data), problem.d)
        key = jax.random.key(7)
        found.append(h._warm_up(compiled, problem, data, post, key, static, None))
    for states, parameters, grads in found[1:]:
        np.testing.assert_array_equal(states.position, found[0][0].position)
        np.testing.assert_array_equal(parameters["step_size"], found[0][1]["step_size"])
        np.testing.assert_array_equal(grads, found[0][2])


def test_ref_json_has_every_contract_field(tiny_spec, tmp_path):
    result = run(build_problem(tiny_spec), FAST)
    write_reference(tmp_path, tiny_spec, result)
    saved = json.loads((tmp_path / "problems" / result.pid / "ref.json").read_text())
    for field in [
        "llc_ref",
        "se_ref",
        "ess",
        "rhat",
        "n_draws",
        "n_chains",
        "divergences",
        "acceptance",
        "grad_evals",
        "runtime_sec",
        "L0",
        "n",
        "beta",
        "gamma",
        "w_star_grad_norm",
        "w_star_hessian_max_eig",
        "budget_exhausted",
        "precision_target",
        "precision_met",
        "code_version",
        "lambda_theory",
        "quality",
        "quality_reasons",
    ]:
        assert field in saved, field
    assert saved["n_chains"] == 4 and saved["n_draws"] == 4 * 400
    assert saved["beta"] == pytest.approx(1 / math.log(500))
    assert saved["lambda_theory"] == 3.5 and not saved["budget_exhausted"]
    assert saved["grad_evals"] > saved["n_draws"]
    assert saved["w_star_hessian_max_eig"] > 0  # h: SGLD's per-curvature unit
    assert 0.5 < saved["acceptance"] <= 1.0
    assert result.code_version.startswith("0.1.0+")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("num_chains", 2),
        ("num_warmup", 5),
        ("target_accept", 1.5),
        ("algorithm", "mala"),
        ("seed", -1),
    ],
)
def test_invalid_reference_config_is_rejected(field, value):
    with pytest.raises(ValidationError, match=field):
        ReferenceConfig(**{field: value})


def test_sufficient_statistics_and_rows_sample_the_same_posterior():
    # Both must land on the exact Gaussian answer; only rounding separates their densities,
    # so their chains part ways after a few steps and agree in distribution only.
    problem = build_problem(
        make_spec(model={"family": "dln", "widths": [3, 2]}, teacher={"rank": 2})
    )
    exact = exact_gaussian_llc(problem)
    for sufficient in (True, False):
        result = run(problem, FAST.model_copy(update={"sufficient_statistics": sufficient}))
        assert abs(result.llc_ref - exact) < 4 * result.se_ref, (sufficient, result.llc_ref)


@pytest.mark.parametrize("widths, points", [([1, 1, 1], 20001), ([1, 1, 1, 1], 1001)])
def test_singular_scalar_chains_match_exact_quadrature(widths, points):
    # f = ab·x and f = abc·x with a zero teacher: λ = 1/2 with multiplicity 2 and 3, the
    # most singular shapes there are. The exact finite-n value is far below λ (measured at
    # n = 500: 0.371 and 0.287), so this is the check that separates the sampler's error
    # from the estimator's finite-n bias: HMC must match the exact value, not λ.
    problem = build_problem(
        make_spec(model={"family": "dln", "widths": widths}, teacher={"rank": 0})
    )
    exact = scalar_chain_llc(problem, points)
    assert abs(exact - scalar_chain_llc(problem, points // 2 + 1)) < 1e-3  # converged
    assert exact < float(problem.lambda_theory.lam) - 0.1
    result = run(problem, FAST)
    assert abs(result.llc_ref - exact) < 4 * result.se_ref, (result.llc_ref, exact)
    assert result.rhat < 1.05


def test_a_starved_reference_is_untrusted_and_a_sound_one_is_not(tiny_spec, tmp_path):
    problem = build_problem(tiny_spec)
    starved = run(problem, ReferenceConfig(num_warmup=20, num_draws=8, chunk_size=8))
    assert starved.quality == "untrusted", starved.quality_reasons
    assert any("ESS" in reason for reason in starved.quality_reasons)
    # What the flows use (a higher target acceptance than FAST: fewer divergences).
    from lambda_hat.samplers.configs import DEFAULT_REFERENCE

    sound = run(problem, DEFAULT_REFERENCE)
    assert sound.quality in ("trusted", "warn"), sound.quality_reasons
    write_reference(tmp_path, tiny_spec, sound)
    folder = tmp_path / "problems" / sound.pid
    saved = json.loads((folder / "ref.json").read_text())
    assert saved["quality"] == sound.quality and "convergence" not in saved
    evidence = json.loads((folder / "convergence.json").read_text())
    assert len(evidence["trace"]) == DEFAULT_REFERENCE.num_chains
    assert evidence["running_mean"][-1] == pytest.approx(sound.llc_ref)
    assert evidence["grad_evals"] == sorted(evidence["grad_evals"])
    assert evidence["grad_evals"][-1] == pytest.approx(sound.grad_evals)


def test_the_reference_key_changes_with_the_numerical_libraries(monkeypatch):
    """A new JAX, jaxlib or BlackJAX recomputes the references (the nightly refresh then
    computes only what is missing or stale); the same versions give the same key."""
    from lambda_hat.reference import record
    from lambda_hat.samplers.configs import ReferenceConfig

    config = ReferenceConfig()
    today = record.reference_code_version(config)
    assert record.reference_code_version(config) == today
    versions = record.library_versions()
    for name in ("jax", "jaxlib", "blackjax"):
        bumped = {**versions, name: versions[name] + ".post1"}
        monkeypatch.setattr(record, "library_versions", lambda bumped=bumped: bumped)
        assert record.reference_code_version(config) != today, name


# A ref.json record as the writers leave it, diagnostics included (checksum added on save).
SOUND = {
    "name": "x", "llc_ref": 3.0, "se_ref": 0.1, "rhat": 1.002, "ess": 1800.0,
    "divergences": 0, "transitions": 8000, "budget_exhausted": False,
    "halves": [3.01, 0.14, 2.99, 0.14], "quality": "trusted", "quality_reasons": [],
}  # fmt: skip


def test_a_ref_json_edited_on_disk_is_not_used_and_its_verdict_is_rederived(tmp_path, caplog):
    from lambda_hat.reference.record import read_reference, reference_dir, save_record

    path = save_record(tmp_path, {**SOUND, "pid": "p_x"})
    assert read_reference(tmp_path, "p_x")["llc_ref"] == 3.0
    # Valid JSON with one number changed: refused, with a warning naming the file.
    edited = json.loads(path.read_text())
    edited["llc_ref"] = 30.0
    path.write_text(json.dumps(edited))
    assert read_reference(tmp_path, "p_x") is None
    assert str(path) in caplog.text and "does not match its checksum" in caplog.text
    # A record whose verdict disagrees with its own diagnostics (R-hat 1.3 called
    # trusted, checksum and all): the diagnostics decide.
    save_record(tmp_path, {**SOUND, "pid": "p_x", "rhat": 1.3})
    read = read_reference(tmp_path, "p_x")
    assert read["quality"] == "untrusted" and "R-hat 1.300 > 1.05" in read["quality_reasons"]
    # Pooled: each batch's verdict is re-derived too.
    batches = [
        {**SOUND, "seed": 0, "n_chains": 4, "n_draws": 2000},
        {**SOUND, "seed": 1, "n_chains": 4, "n_draws": 2000, "divergences": 2000},
    ]
    save_record(tmp_path, {**SOUND, "pid": "p_x", "batches": batches})
    assert read_reference(tmp_path, "p_x")["quality"] == "untrusted"
    assert reference_dir(tmp_path, "p_x") == path.parent


def test_references_are_looked_up_only_when_every_one_is_current(tmp_path):
    """All cached: read from ref.json, no cluster needed. One missing or stale: None, and
    the flow computes them on the reference cluster (the cached ones as cache hits)."""
    from flows.reference import cached_references
    from lambda_hat.problems.specs import load_problem_set
    from lambda_hat.reference.record import reference_code_version, save_record
    from lambda_hat.samplers.configs import ReferenceConfig

    config = ReferenceConfig(num_warmup=100, num_draws=200)
    specs = [spec.model_dump(mode="json") for spec in load_problem_set("smoke").problems]
    pids = [spec.pid for spec in load_problem_set("smoke").problems]
    version = reference_code_version(config)
    for pid in pids:
        save_record(tmp_path, {**SOUND, "pid": pid, "code_version": version})
    found = cached_references(specs, config.model_dump(mode="json"), tmp_path)
    assert [ref["pid"] for ref in found] == pids and all(ref["cached"] for ref in found)
    save_record(tmp_path, {**SOUND, "pid": pids[1], "code_version": "old"})
    assert cached_references(specs, config.model_dump(mode="json"), tmp_path) is None
    (tmp_path / "problems" / pids[1] / "ref.json").unlink()
    assert cached_references(specs, config.model_dump(mode="json"), tmp_path) is None


def test_pooled_batches_weight_by_draws_and_flag_disagreement():
    from lambda_hat.reference.pool import next_seed, pool

    base = {
        "llc_ref": 2.0, "se_ref": 0.1, "n_chains": 4, "n_draws": 2000, "ess": 800.0,
        "rhat": 1.01, "divergences": 1, "grad_evals": 100, "runtime_sec": 2.0,
        "transitions": 8000, "quality": "trusted", "quality_reasons": [],
    }  # fmt: skip
    # A budget-cut batch with half the draws counts half.
    short = {**base, "llc_ref": 2.3, "se_ref": 0.2, "n_draws": 1000, "rhat": 1.02}
    pooled = pool(base, short, seed=1)
    assert pooled["llc_ref"] == pytest.approx((2 * 2.0 + 1 * 2.3) / 3)
    assert pooled["se_ref"] == pytest.approx(((2 / 3) ** 2 * 0.01 + (1 / 3) ** 2 * 0.04) ** 0.5)
    assert (pooled["divergences"], pooled["n_chains"], pooled["rhat"]) == (2, 8, 1.02)
    assert pooled["quality"] == "trusted" and next_seed(pooled) == 2
    # 2.0 ± 0.1 against 3.0 ± 0.1: z = 7, at least one batch did not mix.
    apart = pool(pooled, {**base, "llc_ref": 3.0}, seed=2)
    assert apart["quality"] == "untrusted"
    assert any("disagrees" in reason for reason in apart["quality_reasons"])


def test_the_dry_run_calls_cached_only_what_the_run_would_use(lambda_hat_env):
    # A ref.json copied into another problem's folder, and one edited on disk: the run
    # would recompute both, so the dry run must not call them cached.
    import os
    import shutil
    import subprocess
    import sys

    from lambda_hat.problems.specs import load_problem_set
    from lambda_hat.reference.record import reference_code_version, save_record
    from lambda_hat.samplers.configs import ReferenceConfig

    from .conftest import REPO

    first, second = load_problem_set("smoke").problems
    artifacts = lambda_hat_env / "artifacts"
    version = reference_code_version(ReferenceConfig(num_warmup=100, num_draws=200))
    path = save_record(artifacts, {**SOUND, "pid": first.pid, "code_version": version})
    (artifacts / "problems" / second.pid).mkdir(parents=True)
    shutil.copy(path, artifacts / "problems" / second.pid / "ref.json")

    def dry_run() -> str:
        argv = [
            sys.executable,
            str(REPO / "flows" / "tune.py"),
            "--problems",
            "smoke",
            "--reference-warmup",
            "100",
            "--reference-draws",
            "200",
            "--dry-run",
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                             cwd=lambda_hat_env, env=dict(os.environ))  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    out = dry_run()
    assert f"({first.pid}): reference cached" in out
    assert f"({second.pid}): reference to compute" in out
    path.write_text(path.read_text().replace('"llc_ref": 3.0', '"llc_ref": 4.0'))
    assert f"({first.pid}): reference to compute" in dry_run()


def test_a_precision_target_extends_sampling_until_it_is_met(tiny_spec):
    problem = build_problem(tiny_spec)
    short = FAST.model_copy(update={"num_draws": 100})
    plain = run(problem, short)
    assert plain.precision_target is None and plain.precision_met is None
    assert plain.n_draws == 4 * 100
    target = 0.6 * plain.se_ref / plain.llc_ref  # needs about 2.8× the draws
    met = run(problem, short.model_copy(update={"target_rel_se": target}))
    assert met.precision_met and met.se_ref <= target * met.llc_ref
    assert 4 * 100 < met.n_draws <= 4 * 1000  # extended, within the default cap (10×)
    assert met.n_draws % (4 * FAST.chunk_size) == 0  # whole chunks
    capped = run(problem, short.model_copy(update={"target_rel_se": 1e-4, "max_draws": 300}))
    assert capped.precision_met is False and capped.n_draws == 4 * 300
    # A target is part of the reference's cache key; no target leaves the key as it was.
    with_target = short.model_copy(update={"target_rel_se": target})
    assert reference_code_version(short) != reference_code_version(with_target)
