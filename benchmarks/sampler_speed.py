"""SGLD LLC estimation: lambda_hat's runner against devinterp 2.0.1 (PyTorch, CPU).

    pip install -e ".[bench]"                       # devinterp 2.0.1 + CPU torch 2.13.0
    .venv/bin/python benchmarks/sampler_speed.py    # ~5 min on 2 cores

Workload (issue 3): teacher–student tanh MLP 10 → H → H → 1 with H = 32 (d = 1441) and
H = 96 (d = 10465), n = 1e4, 4 chains × 1000 draws, batch 256, identical data, w*, ε, γ
and nβ. devinterp runs its default ``llc()`` (float32, every step's minibatch loss). Ours
runs the same estimator (``llc_estimator="minibatch"``) in float32:
- cold: the first trial in a fresh process with the persistent compilation cache off;
- warm: three more trials with other step sizes, as a tuning study runs them (compile
  counter reported: it must not move);
- bare: a hand-written jitted SGLD loop (the floor any runner can reach).
Results go to ``benchmarks/results/sampler_speed.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lambda_hat.io import atomic_write_json
from lambda_hat.problems.models import unflatten
from lambda_hat.problems.posterior import LossData, empirical_loss
from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers import sgld
from lambda_hat.samplers.common import compile_count

NUM_CHAINS, NUM_DRAWS, BATCH = 4, 1000, 256


def mlp_spec(hidden: int, n: int) -> ProblemSpec:
    widths = [10, hidden, hidden, 1]
    return ProblemSpec.model_validate(
        {
            "name": f"mlp_{hidden}",
            "model": {"family": "mlp", "widths": widths, "activation": "tanh"},
            "teacher": {"widths": widths},
            "data": {"n": n},
            # A near-optimum is enough to compare two samplers on the same weights;
            # polishing a 10k-parameter MLP to 1e-8 would take longer than the benchmark.
            "optimum": {"lbfgs_steps": 1000, "max_grad_norm": 1e-2},
        }
    )


def ours(problem, step_size: float) -> sgld.MethodResult:
    config = sgld.SGLDConfig(
        step_size=step_size,
        num_steps=NUM_DRAWS,
        burn_in_frac=0.0,
        batch_size=BATCH,
        num_chains=NUM_CHAINS,
        llc_estimator="minibatch",
        precision="float32",
    )
    return sgld.run(problem, config, seed=0)


def bare_loop(problem, step_size: float) -> float:
    """A plain jitted SGLD loop, no chunks, no checks: seconds once compiled."""
    f32 = jnp.float32
    x, y = jnp.asarray(problem.data.x, f32), jnp.asarray(problem.data.y, f32)
    sigma = jnp.asarray(problem.data.sigma, f32)
    w_star = jnp.asarray(problem.w_star, f32)
    n_beta, gamma, eps = f32(problem.n_beta), f32(problem.gamma), f32(step_size)

    @jax.jit
    def run(key):
        def chain(key):
            def step(w, key):
                key_batch, key_noise = jax.random.split(key)
                index = jax.random.randint(key_batch, (BATCH,), 0, problem.n)
                batch = LossData(x[index], y[index], sigma)
                loss, grad = jax.value_and_grad(empirical_loss)(w, batch, problem.arch)
                drift = n_beta * grad + gamma * (w - w_star)
                noise = jax.random.normal(key_noise, w.shape, f32)
                return w - 0.5 * eps * drift + jnp.sqrt(eps) * noise, loss

            return jax.lax.scan(step, w_star, jax.random.split(key, NUM_DRAWS))[1]

        return jax.vmap(chain)(jax.random.split(key, NUM_CHAINS))

    run(jax.random.key(0)).block_until_ready()
    times = []
    for seed in range(3):
        start = time.perf_counter()
        run(jax.random.key(seed + 1)).block_until_ready()
        times.append(time.perf_counter() - start)
    return min(times)


def devinterp_llc(problem, step_size: float, repeats: int) -> tuple[float, float, list[float]]:
    """devinterp's default ``llc()`` on the same data and weights: (llc, chain std, times)."""
    import torch
    from datasets import Dataset
    from devinterp.slt.llc import llc

    torch.manual_seed(0)
    layers = []
    for index, (weight, bias) in enumerate(
        unflatten(np.asarray(problem.w_star), problem.arch.layers)
    ):
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(np.asarray(weight), dtype=torch.float32))
            linear.bias.copy_(torch.tensor(np.asarray(bias), dtype=torch.float32))
        layers.append(linear)
        if index < len(problem.arch.layers) - 1:
            layers.append(torch.nn.Tanh())
    model = torch.nn.Sequential(*layers)
    # devinterp expects token sequences ("input_ids"); a row here is (x, y) and the
    # "per-token" loss is the per-sample Gaussian NLL repeated over the 10 positions, so
    # its mean is exactly our L_n.
    rows = np.concatenate([np.asarray(problem.data.x), np.asarray(problem.data.y)], axis=1)
    dataset = Dataset.from_dict({"input_ids": rows.astype(np.float32)}).with_format("torch")
    sigma = float(problem.data.sigma)
    n_in = rows.shape[1] - 1

    def loss_fn(model, input_ids):
        x, y = input_ids[:, :n_in].float(), input_ids[:, n_in:].float()
        per_sample = 0.5 * ((y - model(x)) ** 2).sum(-1) / sigma**2
        return per_sample[:, None].expand(-1, n_in)

    times, result = [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            result = llc(
                model,
                dataset,
                {},
                lr=step_size,
                n_beta=problem.n_beta,
                localization=problem.gamma,
                num_chains=NUM_CHAINS,
                num_draws=NUM_DRAWS,
                batch_size=BATCH,
                loss_fn=loss_fn,
                output_path=Path(tmp) / "samples.zarr",
            )
            times.append(time.perf_counter() - start)
    return float(result.llc_mean), float(result.llc_std), times


def bench_one(hidden: int, n: int, step_size: float, repeats: int) -> dict:
    print(f"== tanh MLP 10-{hidden}-{hidden}-1, n = {n}", flush=True)
    problem = build_problem(mlp_spec(hidden, n), cache_dir=Path("results/targets"))
    print(f"   d = {problem.d}, nβ = {problem.n_beta:.1f}, γ = {problem.gamma}, ε = {step_size}")
    compiles = compile_count()
    start = time.perf_counter()
    cold = ours(problem, step_size)
    cold_sec = time.perf_counter() - start
    warm = []
    for factor in (0.5, 0.75, 1.0):  # trials of a study: new hyperparameter values
        start = time.perf_counter()
        result = ours(problem, step_size * factor)
        warm.append((time.perf_counter() - start, result))
    warm_sec = statistics.median(t for t, _ in warm)
    if any(result.status != "ok" for _, result in [(0, cold), *warm]):
        raise SystemExit(f"a trial did not finish ok at ε = {step_size}: lower --step-sizes")
    recompiles = compile_count() - compiles - 1  # the cold trial compiles once
    ours_llc = warm[-1][1]
    bare_sec = bare_loop(problem, step_size)
    di_llc, di_std, di_times = devinterp_llc(problem, step_size, repeats)
    di_sec = statistics.median(di_times)
    noise = float(np.hypot(di_std / np.sqrt(NUM_CHAINS), ours_llc.se_hat))
    row = {
        "hidden": hidden,
        "d": problem.d,
        "n": n,
        "step_size": step_size,
        "n_beta": problem.n_beta,
        "gamma": problem.gamma,
        "devinterp_sec": di_sec,
        "devinterp_sec_all": di_times,
        "ours_cold_sec": cold_sec,
        "ours_warm_sec": warm_sec,
        "bare_jax_sec": bare_sec,
        "speedup_warm": di_sec / warm_sec,
        "speedup_cold": di_sec / cold_sec,
        "warm_over_bare": warm_sec / bare_sec,
        "recompiles_between_trials": recompiles,
        "llc_ours": ours_llc.llc_hat,
        "llc_ours_se": ours_llc.se_hat,
        "llc_ours_cold": cold.llc_hat,
        "llc_devinterp": di_llc,
        "llc_devinterp_chain_std": di_std,
        "llc_difference_in_noise_units": abs(ours_llc.llc_hat - di_llc) / noise,
    }
    print(
        f"   devinterp {di_sec:.2f} s | ours warm {warm_sec:.3f} s ({row['speedup_warm']:.1f}×), "
        f"cold {cold_sec:.2f} s ({row['speedup_cold']:.1f}×) | bare JAX {bare_sec:.3f} s | "
        f"recompiles {recompiles}"
    )
    print(
        f"   LLC ours {ours_llc.llc_hat:.2f} ± {ours_llc.se_hat:.2f}, devinterp {di_llc:.2f} "
        f"(chain std {di_std:.2f}): |Δ| = {row['llc_difference_in_noise_units']:.1f} noise units",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 96])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument(
        "--step-sizes",
        type=float,
        nargs="+",
        default=[1e-4, 3e-5],
        help="ε per hidden width (1e-4 diverges at H = 96)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="devinterp runs per size")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sampler_speed.json"))
    args = parser.parse_args(argv)
    # Cold means cold: no persistent compilation cache in this process.
    jax.config.update("jax_enable_compilation_cache", False)
    if len(args.step_sizes) != len(args.hidden):
        parser.error("give one --step-sizes value per --hidden value")
    rows = [
        bench_one(h, args.n, eps, args.repeats)
        for h, eps in zip(args.hidden, args.step_sizes, strict=True)
    ]
    atomic_write_json(
        args.out,
        {"workload": {"chains": NUM_CHAINS, "draws": NUM_DRAWS, "batch": BATCH}, "rows": rows},
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
