"""The report's plots, drawn from plain records (Parquet rows, ref.json, convergence.json).

Each function draws one figure on matplotlib's Agg canvas (no display, no pyplot state, so
it is safe in worker threads) and writes it to ``path`` as PNG. Every error shown carries
its interval: trials their objective's SE, validated errors their 95 % t interval,
references ± 2 SE.

>>> import tempfile, pathlib
>>> out = pathlib.Path(tempfile.mkdtemp()) / "calibration.png"
>>> points = [{"label": "a", "llc_ref": 1.0, "se_ref": 0.05, "llc_hats": [0.9, 1.1, 1.0]}]
>>> calibration(points, "sgld", out).read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lambda_hat.tuning.stats import t_interval

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
METHOD_COLORS = {"sgld": "tab:blue", "psgld": "tab:cyan", "mclmc": "tab:orange", "vi": "tab:green"}


def _figure(width: float = 6.4, height: float = 4.2) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def finite(value: Any) -> bool:
    """A real number, not NaN or ±inf (None and other types are not)."""
    return isinstance(value, int | float) and math.isfinite(value)


def _blown_up(values: Sequence[float]) -> bool:
    """Whether a few values would squash the rest on a linear axis (the largest more than
    20 times the median): such an axis is drawn on a log scale instead."""
    positive = sorted(v for v in values if finite(v) and v > 0)
    return len(positive) >= 3 and positive[-1] > 20 * positive[len(positive) // 2]


def study_progress(
    trials: Sequence[dict[str, Any]],
    validated: dict[str, Any] | None,
    title: str,
    path: Path | str,
    ylabel: str = "|llc_hat − llc_ref| (search objective)",
) -> Path:
    """Objective per trial (± its SE over repeats; pruned trials hollow; failed trials as
    red crosses on the axis's top edge, labelled with the reason), the best so far, and
    the recommended configuration's validated error with its 95 % interval.

    ``trials``: ``{"number", "objective", "objective_se", "state"}`` (and ``"reason"`` for
    a failed one); ``validated``: ``{"mean", "ci_low", "ci_high", "n"}`` or None."""
    figure = _figure()
    axes = figure.add_subplot()
    done = [t for t in trials if t["state"] == "COMPLETE" and finite(t["objective"])]
    pruned = [t for t in trials if t["state"] == "PRUNED" and finite(t["objective"])]
    failed = [t for t in trials if t not in done and t not in pruned]
    if done:
        axes.errorbar(
            [t["number"] for t in done],
            [t["objective"] for t in done],
            yerr=[t["objective_se"] if finite(t["objective_se"]) else 0.0 for t in done],
            fmt="o", color="tab:blue", capsize=2, label="trial objective ± SE",
        )  # fmt: skip
    if pruned:
        axes.plot(
            [t["number"] for t in pruned], [t["objective"] for t in pruned], "o",
            mfc="none", color="tab:gray", label="pruned (running objective)",
        )  # fmt: skip
    _best_so_far(axes, done, [t["number"] for t in trials])
    if validated and finite(validated.get("mean")):
        low = validated["ci_low"] if finite(validated.get("ci_low")) else validated["mean"]
        high = validated["ci_high"] if finite(validated.get("ci_high")) else validated["mean"]
        axes.axhspan(max(low, 0.0), high, color="tab:red", alpha=0.15)
        axes.axhline(
            validated["mean"], color="tab:red",
            label=f"validated error, 95 % CI (n={validated.get('n')})",
        )  # fmt: skip
    shown = [t["objective"] for t in done + pruned]
    if _blown_up(shown):
        axes.set_yscale("log")
    if failed:
        _failed_marks(axes, failed)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial number (as in Optuna and the log)")
    axes.set_ylabel(ylabel + (" (log scale)" if axes.get_yscale() == "log" else ""))
    axes.set_title(title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="small")
    return _save(figure, path)


def _best_so_far(axes: Any, done: Sequence[dict[str, Any]], numbers: Sequence[int]) -> None:
    """A step line of the best objective so far, drawn to the last trial so that a single
    completed trial shows as a segment rather than nothing."""
    best, steps = math.inf, []
    for trial in sorted(done, key=lambda t: t["number"]):
        best = min(best, trial["objective"])
        steps.append((trial["number"], best))
    if not steps:
        return
    last = max([*numbers, steps[-1][0]])
    if last == steps[-1][0]:
        last += 0.5
    steps.append((last, steps[-1][1]))
    axes.step(*zip(*steps, strict=True), where="post", color="black", label="best so far")


def _failed_marks(axes: Any, failed: Sequence[dict[str, Any]]) -> None:
    """Failed trials at their trial number on the top edge, with their reason."""
    transform = axes.get_xaxis_transform()  # x in data, y in axes fraction
    numbers = [t["number"] for t in failed]
    axes.plot(numbers, [0.97] * len(numbers), "x", color="tab:red", transform=transform,
              clip_on=False, label="failed trial (reason above)")  # fmt: skip
    for trial in failed:
        axes.annotate(
            trial.get("reason") or "failed", (trial["number"], 0.97), xycoords=transform,
            xytext=(0, 4), textcoords="offset points", ha="center", fontsize="x-small",
            color="tab:red",
        )  # fmt: skip


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (cost, error) points no other point beats on both, cheapest first.

    >>> pareto_front([(1, 5), (2, 3), (3, 4), (4, 1)])
    [(1, 5), (2, 3), (4, 1)]
    """
    front, best = [], math.inf
    for cost, error in sorted(points):
        if error < best:
            front.append((cost, error))
            best = error
    return front


def error_vs_cost(
    configs: Sequence[dict[str, Any]],
    title: str,
    path: Path | str,
    methods: Sequence[str] | None = None,
) -> Path:
    """Relative error against cost (full-gradient equivalents) of every configuration of
    every method on one problem (means over its runs), the Pareto front over all, and each
    method's recommended configuration ringed.

    ``configs``: ``{"method", "cost", "rel_error"}`` (and ``"recommended": True`` for a
    recommendation), one per configuration; ``methods``: the legend's order."""
    figure = _figure()
    axes = figure.add_subplot()
    usable = [c for c in configs if finite(c["cost"]) and finite(c["rel_error"])]
    present = {c["method"] for c in usable}
    order = [m for m in methods or [] if m in present] + sorted(present - set(methods or []))
    for method in order:
        mine = [c for c in usable if c["method"] == method]
        axes.plot(
            [c["cost"] for c in mine], [max(c["rel_error"], 1e-6) for c in mine], "o",
            alpha=0.7, color=METHOD_COLORS.get(method), label=method,
        )  # fmt: skip
    chosen = [c for c in usable if c.get("recommended")]
    if chosen:
        axes.plot(
            [c["cost"] for c in chosen], [max(c["rel_error"], 1e-6) for c in chosen], "o",
            ms=13, mfc="none", mec="black", mew=1.5, label="recommended",
        )  # fmt: skip
    front = pareto_front([(c["cost"], max(c["rel_error"], 1e-6)) for c in usable])
    if len(front) > 1:
        axes.step(*zip(*front, strict=True), where="post", color="black", label="Pareto front")
    elif front:
        axes.plot(*front[0], "s", mfc="none", mec="black", ms=9, label="Pareto front (one point)")
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("cost per run (full-gradient equivalents)")
    axes.set_ylabel("|llc_hat − llc_ref| / llc_ref (log scale)")
    axes.set_title(title)
    if usable:
        axes.legend(fontsize="small")
    return _save(figure, path)


def calibration(points: Sequence[dict[str, Any]], method: str, path: Path | str) -> Path:
    """llc_hat of each problem's recommended configuration (mean of its validation runs,
    95 % t interval) against llc_ref (± 2 SE), with the identity line.

    ``points``: ``{"label", "llc_ref", "se_ref", "llc_hats"}``, one per problem."""
    figure = _figure(5.6, 5.0)
    axes = figure.add_subplot()
    values = []
    for index, point in enumerate(points):
        hats = [h for h in point["llc_hats"] if finite(h)]
        if not hats:
            continue
        mean = sum(hats) / len(hats)
        interval = t_interval(hats)
        low, high = interval if interval else (mean, mean)
        # One marker per problem, named in the legend: labels beside close points overlap.
        axes.errorbar(
            point["llc_ref"], mean, xerr=2 * point["se_ref"], yerr=[[mean - low], [high - mean]],
            fmt=MARKERS[index % len(MARKERS)], capsize=3, color=f"C{index % 10}", ms=7,
            label=point["label"],
        )  # fmt: skip
        values += [point["llc_ref"], low, high]
    if values:
        lo, hi = min(values), max(values)
        pad = 0.05 * (hi - lo or 1.0)
        axes.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="gray", label="y = x")
        axes.legend(fontsize="x-small")
    axes.set_xlabel("llc_ref (HMC, ± 2 SE)")
    axes.set_ylabel(f"llc_hat of {method}'s recommendation (95 % CI)")
    axes.set_title(f"calibration: {method}")
    return _save(figure, path)


def reference_convergence(evidence: dict[str, Any], title: str, path: Path | str) -> Path:
    """A reference's chains: their traces of nβ(L_n − L0) (left) and the running mean
    ± 2 SE with each chain's running mean against gradient evaluations (right)."""
    figure = _figure(10.0, 4.0)
    left, right = figure.subplots(1, 2)
    every = evidence.get("trace_every", 1)
    for chain, trace in enumerate(evidence.get("trace", [])):
        left.plot([every * k for k in range(len(trace))], trace, lw=0.6, label=f"chain {chain}")
    left.set_xlabel("draw")
    left.set_ylabel("nβ(L_n(w) − L_n(w*))")
    left.set_title("traces")
    grads = evidence.get("grad_evals", [])
    mean = evidence.get("running_mean", [])
    se = evidence.get("running_se", [])
    for chain, running in enumerate(evidence.get("chain_running_mean", [])):
        right.plot(grads, running, lw=0.6, alpha=0.6, label=f"chain {chain}")
    if grads:
        right.fill_between(
            grads, [m - 2 * s for m, s in zip(mean, se, strict=True)],
            [m + 2 * s for m, s in zip(mean, se, strict=True)], color="black", alpha=0.15,
        )  # fmt: skip
        right.plot(grads, mean, color="black", label="pooled mean ± 2 SE")
    right.set_xlabel("gradient evaluations")
    right.set_ylabel("running mean of the LLC estimate")
    right.set_title("convergence")
    for axes in (left, right):
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="x-small")
    figure.suptitle(title)
    return _save(figure, path)


def error_vs_parameter(
    points: Sequence[dict[str, Any]], method: str, parameter: str, path: Path | str
) -> Path:
    """A slice: each search run's |llc_hat − llc_ref| / llc_ref against one tuned
    parameter of the method, one colour per problem (log-log where the parameter is
    log-scaled, e.g. a step size).

    ``points``: ``{"problem", "value", "rel_error"}``, one per run."""
    figure = _figure()
    axes = figure.add_subplot()
    usable = [p for p in points if finite(p["value"]) and finite(p["rel_error"])]
    for problem in dict.fromkeys(p["problem"] for p in usable):
        mine = [p for p in usable if p["problem"] == problem]
        axes.plot(
            [p["value"] for p in mine], [max(p["rel_error"], 1e-6) for p in mine], "o",
            alpha=0.6, label=problem,
        )  # fmt: skip
    values = [p["value"] for p in usable]
    if values and min(values) > 0 and max(values) > 5 * min(values):
        axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel(parameter)
    axes.set_ylabel("|llc_hat − llc_ref| / llc_ref per run (log scale)")
    axes.set_title(f"{method}: error against {parameter}")
    if usable:
        axes.legend(fontsize="small")
    return _save(figure, path)


def method_trace(
    trace: dict[str, Any], llc_ref: float, se_ref: float, title: str, path: Path | str
) -> Path:
    """One run's chains of nβ(L_n(w_t) − L_n(w*)) against the kept draw, with the HMC
    reference's llc_ref ± 2 SE as a band (devinterp's ``plot_trace``, against the truth).
    Each chain's mean is its LLC estimate, so a chain whose trace sits apart from the band
    is biased, and one still drifting at the end has not mixed.

    ``trace``: ``{"trace": [[...] per chain], "trace_every": k}`` (a run's diagnostics)."""
    figure = _figure()
    axes = figure.add_subplot()
    every = trace.get("trace_every", 1)
    for chain, values in enumerate(trace.get("trace", [])):
        xs = [every * k for k, v in enumerate(values) if finite(v)]
        axes.plot(xs, [v for v in values if finite(v)], lw=0.7, label=f"chain {chain}")
    if finite(llc_ref):
        band = 2 * se_ref if finite(se_ref) else 0.0
        axes.axhspan(llc_ref - band, llc_ref + band, color="black", alpha=0.15)
        axes.axhline(llc_ref, color="black", label="llc_ref ± 2 SE (HMC)")
    axes.set_xlabel("kept draw")
    axes.set_ylabel("nβ(L_n(w) − L_n(w*))")
    axes.set_title(title)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize="x-small")
    return _save(figure, path)
