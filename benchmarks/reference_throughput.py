"""HMC reference gradient throughput against bare jitted ``value_and_grad`` loops.

    .venv/bin/python benchmarks/reference_throughput.py     # ~8 min on 2 cores

One problem, RRR 4-3-5 r=1 at n = 1e4 (d = 27), 4 chains, float64, with L_n evaluated both
ways the reference can: from the n data rows (what MLPs always use) and from the data's
second moments (what linear networks use by default). For each, NUTS and plain HMC
(16 leapfrog steps) are timed on a second run with another seed, so compilation is not
counted, and set against two ceilings on the same loss:
- bare, vmapped: one jitted ``lax.scan`` of ``value_and_grad`` over the 4 chains at once;
- bare, one chain: the same loop for a single chain.
Results go to ``benchmarks/results/reference_throughput.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reference_accuracy import bare_grad_throughput

from lambda_hat.compile_cache import enable_compilation_cache
from lambda_hat.io import atomic_write_json
from lambda_hat.problems.specs import ProblemSpec
from lambda_hat.problems.targets import build_problem
from lambda_hat.samplers.configs import ReferenceConfig
from lambda_hat.samplers.hmc_reference import run

OUT = Path("benchmarks/results/reference_throughput.json")
SPEC = {
    "name": "rrr_4_3_5_r1",
    "model": {"family": "rrr", "m_in": 4, "hidden": 3, "n_out": 5},
    "teacher": {"rank": 1},
    "data": {"n": 10_000},
}
# Rows cost ~0.2 ms per gradient here: fewer transitions keep the run to minutes.
LENGTHS = {"rows": (100, 100), "moments": (500, 1000)}


def main() -> int:
    enable_compilation_cache()
    problem = build_problem(ProblemSpec.model_validate(SPEC))
    rows = []
    for loss, (num_warmup, num_draws) in LENGTHS.items():
        for algorithm in ("nuts", "hmc"):
            config = ReferenceConfig(
                algorithm=algorithm,
                num_warmup=num_warmup,
                num_draws=num_draws,
                sufficient_statistics=loss == "moments",
            )
            run(problem, config)  # compiles
            timed = run(problem, config.model_copy(update={"seed": 1}))
            rate = timed.grad_evals / timed.runtime_sec
            vmapped = bare_grad_throughput(problem, config)
            single = bare_grad_throughput(problem, config, vmapped=False)
            rows.append(
                {
                    "loss": loss,
                    "algorithm": algorithm,
                    "grads_per_sec": rate,
                    "bare_vmapped_grads_per_sec": vmapped,
                    "bare_single_chain_grads_per_sec": single,
                    "ratio_vs_vmapped": rate / vmapped,
                    "ratio_vs_single_chain": rate / single,
                    "grads_per_transition": timed.grad_evals
                    / (config.num_chains * (num_warmup + num_draws)),
                    "runtime_sec": timed.runtime_sec,
                }
            )
            print(
                f"{loss:<8} {algorithm:<4} {rate:9.0f} grads/s; bare vmapped {vmapped:9.0f} "
                f"({rate / vmapped:.2f}×), bare one chain {single:9.0f} ({rate / single:.2f}×)",
                flush=True,
            )
            atomic_write_json(OUT, {"problem": SPEC, "num_chains": 4, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
