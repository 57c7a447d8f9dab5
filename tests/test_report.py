"""The report: what each plot is drawn from, and a page that opens offline."""

from __future__ import annotations

import math
import re

import pytest

from lambda_hat.results import plots
from lambda_hat.results.plot_points import calibration_points, problem_configs, study_trials
from lambda_hat.results.plots import pareto_front
from lambda_hat.results.report import build_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_row(**fields) -> dict:
    base = {
        "study_name": "p_1:sgld", "pid": "p_1", "problem_name": "tiny", "method": "sgld",
        "stage": "search", "status": "ok", "config_id": "c_a", "trial_number": 0,
        "trial_state": "complete", "trial_objective": 0.2, "trial_objective_se": 0.05,
        "llc_hat": 3.1, "rel_error": 0.05, "full_grad_equiv": 1000.0,
    }  # fmt: skip
    return {**base, **fields}


RUNS = [
    run_row(trial_number=0, config_id="c_a", trial_objective=0.3, rel_error=0.1),
    run_row(trial_number=0, config_id="c_a", trial_objective=0.3, rel_error=0.08),
    run_row(trial_number=1, config_id="c_b", trial_state="pruned", trial_objective=0.9),
    run_row(trial_number=2, config_id="c_c", trial_state=None),  # not told yet
    run_row(
        stage="validation", config_id="c_a", trial_number=None, trial_state=None, llc_hat=2.9
    ),  # fmt: skip
    run_row(
        stage="validation", config_id="c_a", trial_number=None, trial_state=None, llc_hat=3.3
    ),  # fmt: skip
    run_row(
        stage="validation", config_id="c_b", trial_number=None, trial_state=None, llc_hat=9.0
    ),  # a candidate that was not recommended  # fmt: skip
    run_row(method="vi", study_name="p_1:vi", config_id="c_v", status="diverged", rel_error=None),
    run_row(pid="p_2", study_name="p_2:sgld", config_id="c_z"),
]
BOARD = [
    {"problem_name": "tiny", "pid": "p_1", "method": "sgld", "config_id": "c_a",
     "params_json": '{"step_size": 1e-05}', "llc_ref": 3.0, "se_ref": 0.05,
     "validated_error_mean": 0.2, "validated_error_ci_low": 0.0, "validated_error_ci_high": 2.7,
     "validated_rel_error_mean": 0.067, "n_validation_runs": 2, "search_objective": 0.3,
     "search_objective_se": 0.01, "trials_done": 1, "trials_pruned": 1, "trials_failed": 0},
]  # fmt: skip
REFERENCE = {"pid": "p_1", "name": "tiny", "llc_ref": 3.0, "se_ref": 0.05, "lambda_theory": 3.0}
EVIDENCE = {
    "grad_evals": [100.0, 200.0, 300.0],
    "running_mean": [3.2, 3.1, 3.0],
    "running_se": [0.3, 0.1, 0.05],
    "chain_running_mean": [[3.3, 3.1, 3.0], [3.1, 3.0, 3.0]],
    "trace_every": 2,
    "trace": [[3.0, 2.5, 3.5], [2.9, 3.1, 3.2]],
}


def test_a_study_plot_gets_each_told_trial_once_with_its_state():
    trials = study_trials(RUNS, "p_1:sgld")
    assert [(t["number"], t["state"], t["objective"]) for t in trials] == [
        (0, "COMPLETE", 0.3),
        (1, "PRUNED", 0.9),
    ]
    # A pruned trial has no objective of its own: its runs' mean so far stands in.
    pruned = [
        run_row(trial_number=4, trial_state="pruned", trial_objective=None, objective=value)
        for value in (2.0, 3.0)
    ]
    (trial,) = study_trials(pruned, "p_1:sgld")
    assert trial["objective"] == 2.5 and trial["state"] == "PRUNED"


def test_error_against_cost_averages_each_configuration_over_its_finished_runs():
    configs = [(c["method"], round(c["rel_error"], 6)) for c in problem_configs(RUNS, "p_1")]
    # c_a: two search runs (0.1, 0.08) and two validation runs (0.05 each) → 0.07; the
    # diverged VI run has no error and is left out; p_2's run is another problem.
    assert ("sgld", 0.07) in configs
    assert all(method == "sgld" for method, _ in configs)
    assert len(configs) == 3  # c_a, c_b, c_c


def test_calibration_uses_only_the_recommendations_validation_runs():
    (point,) = calibration_points(RUNS, BOARD, "sgld")
    assert point["llc_hats"] == [2.9, 3.3] and point["llc_ref"] == 3.0
    assert calibration_points(RUNS, BOARD, "vi") == []


def test_pareto_front_keeps_only_unbeaten_points():
    assert pareto_front([(3, 1), (1, 5), (2, 5), (1, 4)]) == [(1, 4), (3, 1)]


def test_the_report_writes_every_plot_and_a_self_contained_page(tmp_path):
    page = build_report(tmp_path, RUNS, BOARD, [REFERENCE], {"p_1": EVIDENCE}, title="t <&>")
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    assert names == [
        "calibration-sgld.png", "cost-tiny.png", "reference-tiny.png", "study-tiny-sgld.png",
    ]  # fmt: skip
    for name in names:
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == 4
    # Images inline; links only to its own sections and the user guide beside the code.
    assert not re.search(r'(src|href)="(?!data:|#|file://[^"]*/docs/user-guide\.md")', html)
    assert "http" not in html
    assert "t &lt;&amp;&gt;" in html  # escaped, not markup
    assert "0.200 [0.000, 2.700] (n=2)" in html  # the validated error as every view shows it


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_missing_or_non_finite_numbers_leave_gaps_not_errors(tmp_path, bad):
    runs = [run_row(trial_objective=bad, trial_objective_se=bad, rel_error=bad, llc_hat=bad)]
    board = [{**BOARD[0], "validated_error_mean": None, "search_objective": bad}]
    evidence = {**EVIDENCE, "trace": []}
    page = build_report(tmp_path, runs, board, [REFERENCE], {"p_1": evidence})
    assert "not validated" in page.read_text()
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in tmp_path.glob("*.png"))


def test_a_failed_trial_is_plotted_with_its_reason_and_a_single_best_still_shows(tmp_path):
    runs = [
        run_row(trial_number=0, trial_objective=0.4),
        run_row(trial_number=1, trial_state="fail", trial_objective=None, objective=None,
                status="diverged", rel_error=None),
    ]  # fmt: skip
    trials = study_trials(runs, "p_1:sgld")
    assert [(t["number"], t["state"], t["reason"]) for t in trials] == [
        (0, "COMPLETE", None), (1, "FAIL", "diverged"),
    ]  # fmt: skip
    figure_path = plots.study_progress(trials, None, "t", tmp_path / "s.png")
    assert figure_path.read_bytes().startswith(PNG_MAGIC)


def test_best_so_far_and_failed_marks_are_drawn_even_for_one_trial():
    from matplotlib.figure import Figure

    axes = Figure().add_subplot()
    plots._best_so_far(axes, [{"number": 0, "objective": 0.4}], [0])
    (line,) = axes.get_lines()
    assert len(line.get_xdata()) == 2  # a segment, not a single invisible point
    plots._failed_marks(axes, [{"number": 3, "reason": "diverged"}])
    assert [t.get_text() for t in axes.texts] == ["diverged"]


def test_an_axis_with_blow_ups_goes_to_log_scale():
    assert plots._blown_up([0.1, 0.12, 0.2, 50.0])
    assert not plots._blown_up([0.1, 0.12, 0.2, 0.5])


def test_the_answer_names_every_method_and_marks_each_problems_best():
    from lambda_hat.results.summary import best_per_problem, leaderboard_view, method_summaries

    board = [
        {**BOARD[0]},
        {**BOARD[0], "method": "vi", "validated_error_mean": 2.0, "validated_error_ci_low": 1.8,
         "validated_error_ci_high": 2.2, "validated_rel_error_mean": 0.6, "validated_bias": 2.0,
         "validated_sd": 0.1, "n_validation_runs": 5},
    ]  # fmt: skip
    assert [s.method for s in method_summaries(board)] == ["sgld", "vi"]
    assert best_per_problem(board)["p_1"].method == "sgld"
    header, cells = leaderboard_view(board)
    assert [row[header.index("method")] for row in cells] == ["sgld ★", "vi"]
    assert not any("transfer" in name for name in header)  # no held-out problems
