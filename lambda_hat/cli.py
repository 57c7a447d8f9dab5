"""``python -m lambda_hat`` (or ``lambda-hat``): the user's command line beside the flows.

    python -m lambda_hat reference --problems smoke     # HMC references, a table
    python -m lambda_hat leaderboard                    # the last campaign's answer
    python -m lambda_hat report                         # index.html again, from results/
    python -m lambda_hat export                         # each recommendation as a methods file
    python -m lambda_hat compact                        # runs.parquet from its parts

``reference`` computes the reference of every problem of a set with the flows' settings
(unless told otherwise) and saves it where the flows look (``lambda_hat.reference.record``):
a reference computed here is the flows' cached reference, and one the flows computed is
shown here without sampling again (``--refresh`` recomputes). ``compact`` folds the part
files of ``runs.parquet`` into it, as every tune run does at its end. ``leaderboard``,
``report`` and ``export`` read what a tune run left (``lambda_hat.results.campaign``) and
write nothing but their own output. None imports Prefect; JAX loads only when a
reference is sampled, matplotlib only for ``report``.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

from pydantic import ValidationError

from lambda_hat.arguments import DefaultsHelp, OneLineErrors, float_in
from lambda_hat.io import check_writable
from lambda_hat.problems.specs import PRESETS, SpecError, format_validation_error
from lambda_hat.reference.record import ReferenceResult, current_reference, write_reference
from lambda_hat.samplers.configs import DEFAULT_REFERENCE, ReferenceConfig
from lambda_hat.settings import Settings


def _parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="python -m lambda_hat",
        description="lambda_hat's command line: references and results beside the flows.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    ref = commands.add_parser(
        "reference",
        help="compute (or show the cached) HMC reference LLC of each problem of a set",
        formatter_class=DefaultsHelp,
    )
    ref.add_argument(
        "--problems", default="default", help=f"a YAML file or a preset ({', '.join(PRESETS)})"
    )
    ref.add_argument("--algorithm", choices=["nuts", "hmc"], default=DEFAULT_REFERENCE.algorithm)
    ref.add_argument("--num-chains", type=int, default=DEFAULT_REFERENCE.num_chains)
    ref.add_argument("--num-warmup", type=int, default=DEFAULT_REFERENCE.num_warmup)
    ref.add_argument(
        "--num-draws", type=int, default=DEFAULT_REFERENCE.num_draws, help="kept draws per chain"
    )
    ref.add_argument(
        "--target-rel-se",
        type=float_in(0.0, 0.5),
        default=None,
        help="precision target: keep drawing after --num-draws until se/llc is at most this",
    )
    ref.add_argument(
        "--cross-check",
        action="store_true",
        help="also estimate each LLC with a second, independent sampler (adjusted MCLMC)",
    )
    ref.add_argument("--seed", type=int, default=DEFAULT_REFERENCE.seed)
    ref.add_argument("--budget-sec", type=float, default=None, help="per problem")
    ref.add_argument("--refresh", action="store_true", help="recompute references that are cached")
    compact = commands.add_parser(
        "compact", help="fold runs.parquet's part files into it (rebuilt if damaged)"
    )
    board = commands.add_parser(
        "leaderboard", help="print the leaderboard and each method's verdict, as the report shows",
        formatter_class=DefaultsHelp,
    )  # fmt: skip
    board.add_argument("--format", choices=["text", "markdown"], default="text")
    board.add_argument(
        "--update", type=Path, default=None, metavar="FILE",
        help=f"write the markdown between {BEGIN} and {END} in FILE (e.g. README.md)",
    )  # fmt: skip
    report = commands.add_parser(
        "report", help="rebuild the report (index.html and its plots) from results/",
        formatter_class=DefaultsHelp,
    )  # fmt: skip
    report.add_argument(
        "--out-dir", type=Path, default=None, help="default: <artifacts-dir>/report"
    )
    export = commands.add_parser(
        "export", help="write each recommended configuration as a methods file (--methods-file)",
        formatter_class=DefaultsHelp,
    )  # fmt: skip
    export.add_argument(
        "--out-dir", type=Path, default=None, help="default: <artifacts-dir>/recommended"
    )
    export.add_argument(
        "--methods-file", default=None,
        help="the search spaces the campaign used, where results/campaign.json lacks them",
    )  # fmt: skip
    for sub in (ref, compact, board, report, export):
        sub.add_argument(
            "--artifacts-dir", type=Path, default=None, help="default: LAMBDA_HAT_ARTIFACTS_DIR"
        )
        sub.add_argument(
            "--results-dir", type=Path, default=None, help="default: LAMBDA_HAT_RESULTS_DIR"
        )
    return parser


def _row(name: str, result: ReferenceResult, cached: bool) -> str:
    theory = f"{result.lambda_theory:8.3f}" if result.lambda_theory is not None else "       -"
    if result.lambda_theory:
        rel = f"{100 * (result.llc_ref - result.lambda_theory) / result.lambda_theory:+6.1f}%"
    else:
        rel = "      -"
    return (
        f"{name:<20} {result.pid:<14} {result.d:>5} {result.n:>7} "
        f"{result.llc_ref:8.3f} ± {result.se_ref:5.3f} {theory} {rel} "
        f"{result.rhat:6.3f} {result.divergences:>5} {result.runtime_sec:8.1f} "
        f"{result.quality}"
        + (f" ({'; '.join(result.quality_reasons)})" if result.quality_reasons else "")
        + (" (cached)" if cached else "")
    )


HEADER = (
    f"{'problem':<20} {'pid':<14} {'d':>5} {'n':>7} {'llc_ref':>8}   {'se':>5} "
    f"{'λ_theory':>8} {'error':>7} {'R-hat':>6} {'div':>5} {'time_s':>8} quality"
)


def _dirs(args: argparse.Namespace) -> tuple[Path, Path]:
    settings = Settings()
    return (
        args.artifacts_dir or settings.artifacts_dir,
        args.results_dir or settings.results_dir,
    )


def reference(args: argparse.Namespace) -> int:
    from lambda_hat.problems.sizes import check_fits
    from lambda_hat.problems.specs import load_problem_set

    try:
        problem_set = load_problem_set(args.problems)
        check_fits(problem_set, Settings().memory_limit_bytes(), args.problems)
        config = ReferenceConfig(
            **{**DEFAULT_REFERENCE.model_dump(), "algorithm": args.algorithm,
               "num_chains": args.num_chains, "num_warmup": args.num_warmup,
               "num_draws": args.num_draws, "seed": args.seed,
               "target_rel_se": args.target_rel_se, "cross_check": args.cross_check},
        )  # fmt: skip
        if args.budget_sec is not None and not args.budget_sec > 0:
            raise SpecError(f"--budget-sec: must be > 0, got {args.budget_sec:g}")
        artifacts_dir, results_dir = _dirs(args)
    except SpecError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValidationError as error:  # (the settings' or the reference config's)
        what = "settings (LAMBDA_HAT_*)" if error.title == "Settings" else "reference config"
        print(f"error: {what}: {format_validation_error(error)}", file=sys.stderr)
        return 2
    print(HEADER, flush=True)
    for spec in problem_set.problems:
        cached = None if args.refresh else current_reference(artifacts_dir, spec, config)
        if cached is not None:
            print(_row(spec.name, ReferenceResult.model_validate(cached), True), flush=True)
            continue
        code = _compute(spec, config, args.budget_sec, artifacts_dir, results_dir)
        if code:
            return code
    return 0


def _compute(spec, config: ReferenceConfig, budget_sec, artifacts_dir: Path, results_dir: Path):
    from lambda_hat.compile_cache import enable_compilation_cache
    from lambda_hat.problems.optimum import OptimumError
    from lambda_hat.problems.targets import build_problem
    from lambda_hat.samplers.hmc_reference import BudgetError, run

    enable_compilation_cache()
    try:
        problem = build_problem(spec, cache_dir=results_dir / "targets")
    except OptimumError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        print(f"  {spec.name}: {done}/{total} draws per chain ({elapsed:.1f} s)", file=sys.stderr)

    print(
        f"  {spec.name}: d={problem.d}, n={problem.n}: compiling and adapting "
        f"({config.num_warmup} warmup steps per chain)...",
        file=sys.stderr,
        flush=True,
    )
    computed_at = time.time()
    try:
        result = run(problem, config, budget_sec=budget_sec, progress=progress)
    except BudgetError as error:
        print(f"error: {spec.name}: {error}", file=sys.stderr)
        return 1
    write_reference(
        artifacts_dir, spec, result, hmc_run_id=uuid.uuid4().hex, computed_at=computed_at
    )
    print(_row(spec.name, result, False), flush=True)
    return 0


def compact(args: argparse.Namespace) -> int:
    from lambda_hat.results.tables import compact as compact_runs

    artifacts_dir, results_dir = _dirs(args)
    target = results_dir / "runs.parquet"
    rows = compact_runs(target, rebuild_from=artifacts_dir / "runs")
    print(f"{target}: {rows} rows")
    return 0


def _campaign(args: argparse.Namespace):
    from lambda_hat.results.campaign import load

    artifacts_dir, results_dir = _dirs(args)
    return load(artifacts_dir, results_dir, with_runs=args.command == "report")


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def leaderboard(args: argparse.Namespace) -> int:
    from lambda_hat.results import summary

    campaign = _campaign(args)
    header, cells = summary.leaderboard_view(campaign.leaderboard)
    verdicts = [item.verdict for item in summary.method_summaries(campaign.leaderboard)]
    if args.update is not None:
        return _update(args.update, campaign.metadata or {}, summary.markdown_table(header, cells),
                       verdicts)  # fmt: skip
    if args.format == "markdown":
        print(summary.markdown_table(header, cells))
        print("\n" + "\n".join(f"- {line}" for line in verdicts))
    else:
        print(summary.text_table(header, cells))
        print("\n" + "\n".join(verdicts))
    return 0


def _update(path: Path, metadata: dict, table: str, verdicts: list[str]) -> int:
    """Replace what lies between the markers in ``path`` with the table, the verdicts and
    where they come from; the rest of the file stays as it is."""
    from lambda_hat.io import atomic_write_bytes

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        print(f"error: --update: {path}: {error.strerror or error}", file=sys.stderr)
        return 2
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        print(f"error: --update: {path} must hold {BEGIN} then {END}, once each", file=sys.stderr)
        return 2
    source = (
        f"<!-- generated by `python -m lambda_hat leaderboard --update {path.name}` from the "
        f"run of {metadata.get('date', '?')}: {metadata.get('command', '?')} -->"
    )
    block = "\n".join([BEGIN, source, "", table, "", *[f"- {v}" for v in verdicts], "", END])
    head, rest = text.split(BEGIN, 1)
    atomic_write_bytes(path, (head + block + rest.split(END, 1)[1]).encode("utf-8"))
    print(f"{path}: results updated")
    return 0


def report(args: argparse.Namespace) -> int:
    from lambda_hat.results.report import build_report

    campaign = _campaign(args)
    artifacts_dir, _ = _dirs(args)
    metadata = campaign.metadata or {}
    title = (
        f"lambda_hat: {', '.join(metadata['methods'])} on {metadata['problems']}"
        if metadata.get("methods") and metadata.get("problems")
        else "lambda_hat tuning report"
    )
    page = build_report(
        args.out_dir or artifacts_dir / "report", campaign.runs, campaign.leaderboard,
        campaign.references, campaign.evidence, title, metadata=campaign.metadata,
        traces=campaign.traces,
    )  # fmt: skip
    print(f"report: {page}")
    return 0


def export(args: argparse.Namespace) -> int:
    from lambda_hat.tuning.recipe_file import write_recommendation
    from lambda_hat.tuning.recipes import recommended_config
    from lambda_hat.tuning.search_space import MethodSpace, SearchSpaceError, load_methods

    campaign = _campaign(args)
    artifacts_dir, _ = _dirs(args)
    recorded = (campaign.metadata or {}).get("spaces")
    try:
        spaces = load_methods(args.methods_file)
    except SearchSpaceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if recorded and not args.methods_file:  # the spaces the last run used, where it has them
        for method, space in recorded.items():
            spaces[method] = MethodSpace.model_validate(space)
        older = sorted({r["method"] for r in campaign.leaderboard} - set(recorded))
        if older:
            print(
                f"warning: {', '.join(older)}: not in the last run's record (an earlier "
                "campaign's rows); their fixed values are the default search space's",
                file=sys.stderr,
            )
    out_dir = args.out_dir or artifacts_dir / "recommended"
    written = 0
    for row in campaign.leaderboard:
        if row.get("config_id") is None or row["method"] not in spaces:
            continue
        config = recommended_config(row, spaces)
        path = out_dir / f"{row['problem_name']}-{row['method']}.yaml"
        write_recommendation(path, row, config)
        print(path)
        written += 1
    print(f"{written} recommended configurations written to {out_dir}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from lambda_hat.results.campaign import NoResults

    args = _parser().parse_args(argv)
    commands = {"reference": reference, "compact": compact, "leaderboard": leaderboard,
                "report": report, "export": export}  # fmt: skip
    try:
        if getattr(args, "out_dir", None) is not None:
            check_writable(args.out_dir, "--out-dir")
        if getattr(args, "update", None) is not None:  # (rewritten by a rename beside it)
            check_writable(args.update.parent, "--update")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        return commands[args.command](args)
    except NoResults as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # (a full disk, a folder taken away meanwhile)
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 1
