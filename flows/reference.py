"""The ``reference`` flow: HMC reference LLCs for a problem set, cached per problem.

    python flows/reference.py --problems smoke          # or run the deployment

1. load and validate the problem set;
2. start the Dask cluster from the settings;
3. compute every reference in parallel (cached: pid + reference config + code version);
4. publish a table artifact (``reference-table``) and return the references.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.futures import wait

from flows.cluster import dask_cluster, runner_for
from flows.logs import forward_library_logs
from lambda_hat.arguments import float_in
from lambda_hat.problems.sizes import check_fits
from lambda_hat.problems.specs import ProblemSpec, load_problem_set
from lambda_hat.reference.record import (
    current_reference,
    read_reference,
    reference_dir,
    save_record,
)
from lambda_hat.samplers.configs import DEFAULT_REFERENCE, ReferenceConfig
from lambda_hat.settings import Settings
from tasks.reference import (
    extend_reference,
    hmc_reference,
    hmc_reference_shard,
    pool_reference_shards,
)
from tasks.report import build_report_task


def storage_paths(settings: Settings) -> dict[str, str]:
    """Absolute paths every worker uses (the same on every node of a cluster)."""
    results = settings.results_dir.resolve()
    return {
        "results_dir": str(results),
        "artifacts_dir": str(settings.artifacts_dir.resolve()),
        "jax_cache_dir": str(settings.jax_cache_dir()),
    }


def cached_reference(
    spec: dict[str, Any], config: dict[str, Any], artifacts_dir: Path
) -> dict[str, Any] | None:
    """The problem's reference, read from its ``ref.json``, when it is current (same cache
    key: problem, sampling settings, code and library versions); else None."""
    record = current_reference(artifacts_dir, spec, ReferenceConfig.model_validate(config))
    return None if record is None else {**record, "cached": True}


def cached_references(
    specs: list[dict[str, Any]], config: dict[str, Any], artifacts_dir: Path
) -> list[dict[str, Any]] | None:
    """Every reference, when all of them are current (see ``cached_reference``); else
    None. With all cached, a flow needs no reference cluster at all."""
    references = [cached_reference(spec, config, artifacts_dir) for spec in specs]
    return None if any(ref is None for ref in references) else references


def _ref_json_intact(artifacts_dir: Path, spec: dict[str, Any]) -> bool:
    """A cached reference counts only while its ref.json is on disk and readable: a
    missing or truncated one (a crash, a full disk, a hand edit) is recomputed."""
    pid = ProblemSpec.model_validate(spec).pid
    path = reference_dir(artifacts_dir, pid) / "ref.json"
    intact = read_reference(artifacts_dir, pid) is not None
    if path.exists() and not intact:
        get_run_logger().warning("%s is unreadable or incomplete; recomputing it", path)
    return intact


@flow(name="compute-references")
def compute_references(
    specs: list[dict[str, Any]],
    config: dict[str, Any],
    refresh: bool = False,
    budget_sec: float | None = None,
) -> list[dict[str, Any]]:
    """One cached ``hmc_reference`` task per problem, all in flight at once; a problem
    whose ref.json is current is read from it (an extended reference included: the
    task's cached result is the reference before its extensions)."""
    settings = Settings()
    artifacts = settings.artifacts_dir.resolve()
    slots: list[Any] = []
    for spec in specs:
        current = None if refresh else cached_reference(spec, config, artifacts)
        if current is not None:
            slots.append(current)
            continue
        recompute = refresh or not _ref_json_intact(settings.artifacts_dir, spec)
        slots.append(_submit(spec, config, recompute, budget_sec, settings))
    wait([slot for slot in slots if not isinstance(slot, dict)])
    references = []
    for slot in slots:
        if isinstance(slot, dict):
            references.append(slot)
            continue
        record = dict(slot.result())
        record["cached"] = slot.state.name == "Cached"
        if record["cached"]:
            restore_ref_json(artifacts, record)
        references.append(record)
    return references


def _submit(
    spec: dict[str, Any],
    config: dict[str, Any],
    recompute: bool,
    budget_sec: float | None,
    settings: Settings,
) -> Any:
    """One problem's reference task: ``hmc_reference``, or with ``shards`` > 1 one
    ``hmc_reference_shard`` task per shard (side by side on the reference cluster) and a
    ``pool_reference_shards`` task that waits for them and writes the one ref.json."""
    paths = storage_paths(settings)
    storage = {"result_storage": settings.results_dir.resolve() / "prefect-results",
               "refresh_cache": recompute}  # fmt: skip
    shards = ReferenceConfig.model_validate(config).shards
    if shards == 1:
        task = hmc_reference.with_options(**storage)
        return task.submit(spec, config, budget_sec=budget_sec, **paths)
    shard_task = hmc_reference_shard.with_options(**storage)
    parts = [
        shard_task.submit(spec, config, index, budget_sec=budget_sec, **paths)
        for index in range(shards)
    ]
    return pool_reference_shards.with_options(**storage).submit(spec, config, parts, **paths)


def restore_ref_json(artifacts_dir: Path, record: dict[str, Any]) -> None:
    """A cache hit whose ref.json holds another reference (``python -m lambda_hat
    reference`` with other settings wrote over it) writes the cached one back: the file
    always says what the run tunes against."""
    written = read_reference(artifacts_dir, record["pid"])
    if written is None or written.get("hmc_run_id") != record.get("hmc_run_id"):
        get_run_logger().info(
            "%s: ref.json held another reference; restored the cached one", record["name"]
        )
        save_record(artifacts_dir, {k: v for k, v in record.items() if k != "cached"})


@flow(name="extend-references")
def extend_references(
    specs: list[dict[str, Any]], config: dict[str, Any], budget_sec: float | None = None
) -> list[dict[str, Any]]:
    """One more batch of chains for each problem, pooled into its ref.json."""
    settings = Settings()
    futures = [
        extend_reference.submit(spec, config, budget_sec=budget_sec, **storage_paths(settings))
        for spec in specs
    ]
    wait(futures)
    return [{**future.result(), "cached": False} for future in futures]


def extend_cached(
    specs: list[dict[str, Any]],
    references: list[dict[str, Any]],
    config: ReferenceConfig,
    settings: Settings,
) -> list[dict[str, Any]]:
    """The references that were already on disk, each extended by one batch (those just
    computed are left as they are: a night's work is one batch per problem)."""
    todo = [index for index, ref in enumerate(references) if ref["cached"]]
    if not todo:
        return references
    with dask_cluster(settings.cluster, role="reference") as address:
        extended = extend_references.with_options(task_runner=runner_for(address))(
            [specs[index] for index in todo],
            config.model_dump(mode="json"),
            budget_sec=settings.budgets.reference_sec,
        )
    references = list(references)
    for index, record in zip(todo, extended, strict=True):
        references[index] = record
    return references


def fetch_or_compute(
    specs: list[dict[str, Any]], config: ReferenceConfig, refresh: bool, settings: Settings
) -> list[dict[str, Any]]:
    """The references: looked up directly when all are cached (no cluster started),
    otherwise computed by ``compute-references`` on the reference cluster."""
    settings_config = config.model_dump(mode="json")
    if not refresh:
        cached = cached_references(specs, settings_config, settings.artifacts_dir.resolve())
        if cached is not None:
            get_run_logger().info(
                "all %d references are cached: no reference cluster started", len(specs)
            )
            return cached
    with dask_cluster(settings.cluster, role="reference") as address:
        return compute_references.with_options(task_runner=runner_for(address))(
            specs, settings_config, refresh=refresh, budget_sec=settings.budgets.reference_sec
        )


def reference_table(references: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def fmt(value: float | None, digits: int = 3) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    return [
        {
            "pid": ref["pid"],
            "name": ref["name"],
            "d": ref["d"],
            "n": ref["n"],
            "llc_ref": f"{ref['llc_ref']:.3f} ± {ref['se_ref']:.3f}",
            "quality": ref.get("quality", "not judged"),
            "why": "; ".join(ref.get("quality_reasons") or []),
            "divergences": ref.get("divergences"),
            "rhat": fmt(ref["rhat"]),
            "lambda_theory": fmt(ref.get("lambda_theory")),
            "runtime_sec": fmt(ref["runtime_sec"], 1),
            "cached": ref["cached"],
        }
        for ref in references
    ]


@flow(name="reference", log_prints=True)
def reference(
    problems: str = "default",
    refresh: bool = False,
    num_warmup: int = DEFAULT_REFERENCE.num_warmup,
    num_draws: int = DEFAULT_REFERENCE.num_draws,
    num_chains: int = 4,
    algorithm: str = "nuts",
    extend: bool = False,
    target_rel_se: float | None = None,
    cross_check: bool = False,
    shards: int = 1,
) -> list[dict[str, Any]]:
    """HMC references for ``problems`` (a preset name or a YAML path): the missing or
    stale ones computed, the current ones read from disk. ``extend`` adds one batch of
    chains (another seed) to each reference that was already there, so a nightly run
    with it lowers their SE night after night; ``refresh`` recomputes every one.
    ``target_rel_se`` sets a precision target, ``cross_check`` adds a second sampler and
    ``shards`` runs each reference's chains as that many tasks (``ReferenceConfig``)."""
    forward_library_logs()
    logger = get_run_logger()
    settings = Settings()
    problem_set = load_problem_set(problems)
    check_fits(problem_set, settings.memory_limit_bytes(), problems)
    config = ReferenceConfig(
        algorithm=algorithm, num_warmup=num_warmup, num_draws=num_draws, num_chains=num_chains,
        target_rel_se=target_rel_se, cross_check=cross_check, shards=shards,
    )  # fmt: skip
    specs = [spec.model_dump(mode="json") for spec in problem_set.problems]
    logger.info("%d problems from %s, refresh=%s", len(specs), problems, refresh)
    references = fetch_or_compute(specs, config, refresh, settings)
    if extend:
        references = extend_cached(specs, references, config, settings)
    create_table_artifact(
        key="reference-table",
        table=reference_table(references),
        description=f"HMC references for {problems}, with their quality verdicts",
    )
    page = build_report_task(
        str(settings.artifacts_dir.resolve()), None, [], references,
        title=f"lambda_hat: HMC references for {problems}", page_name="references.html",
    )  # fmt: skip
    logger.info("reference plots: %s", page)
    for ref in references:
        logger.info(
            "%s (%s): llc_ref %.3f ± %.3f, %s%s",
            ref["name"],
            ref["pid"],
            ref["llc_ref"],
            ref["se_ref"],
            ref.get("quality", "not judged"),
            " (cached)" if ref["cached"] else "",
        )
    return references


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python flows/reference.py", description=__doc__)
    parser.add_argument("--problems", default="default", help="a preset or a YAML file")
    parser.add_argument("--refresh", action="store_true", help="recompute cached references")
    parser.add_argument("--num-warmup", type=int, default=DEFAULT_REFERENCE.num_warmup)
    parser.add_argument("--num-draws", type=int, default=DEFAULT_REFERENCE.num_draws)
    parser.add_argument(
        "--extend", action="store_true", help="add a batch of chains to each cached reference"
    )
    parser.add_argument(
        "--target-rel-se", type=float_in(0.0, 0.5), default=None,
        help="precision target: keep drawing after --num-draws until se/llc is at most this",
    )  # fmt: skip
    parser.add_argument(
        "--cross-check", action="store_true",
        help="also estimate each LLC with a second, independent sampler (adjusted MCLMC)",
    )  # fmt: skip
    parser.add_argument(
        "--shards", type=int, choices=(1, 2, 4), default=1,
        help="run each reference's chains as this many tasks (must divide the chains, 4)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    reference(
        problems=args.problems,
        refresh=args.refresh,
        num_warmup=args.num_warmup,
        num_draws=args.num_draws,
        extend=args.extend,
        target_rel_se=args.target_rel_se,
        cross_check=args.cross_check,
        shards=args.shards,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
