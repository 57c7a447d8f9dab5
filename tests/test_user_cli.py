"""What a user does after a run (issue 25): ``python -m lambda_hat leaderboard | report |
export | compact`` on a campaign's files, as a real subprocess; the files they write keep
the umask's mode; ``--help`` writes nothing."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from html import escape
from pathlib import Path

import pytest
import yaml

from lambda_hat.io import atomic_write_bytes
from lambda_hat.reference.record import save_record
from lambda_hat.results.metadata import describe_run, save_run
from lambda_hat.results.summary import method_summaries
from lambda_hat.results.tables import append_rows, write_leaderboard
from lambda_hat.tuning.search_space import load_methods

COMMANDS = ("reference", "compact", "leaderboard", "report", "export")


def board_row(pid: str, name: str, method: str, error: float, rel: float, bias: float) -> dict:
    return {
        "kind": "problem", "study_name": f"{pid}:{method}", "problem_name": name, "pid": pid,
        "method": method, "config_id": f"c_{pid[2:]}{method}",
        "params_json": '{"step_size": 0.000123456}' if method == "sgld"
        else '{"learning_rate": 0.00858, "family": "meanfield"}',
        "search_trial_number": 1, "search_objective": error * 0.8, "search_objective_se": 0.01,
        "validated_error_mean": error, "validated_error_ci_low": error * 0.7,
        "validated_error_ci_high": error * 1.3, "validated_rel_error_mean": rel,
        "validated_rel_error_ci_low": rel * 0.7, "validated_rel_error_ci_high": rel * 1.3,
        "validated_bias": bias, "validated_sd": 0.05, "n_validation_runs": 5,
        "llc_ref": error / rel, "se_ref": 0.04, "trials_done": 4, "trials_pruned": 1,
        "trials_failed": 0,
    }  # fmt: skip


BOARD = [
    board_row("p_aaaaaaaaaaaa", "alpha", "sgld", 0.3, 0.05, -0.3),
    board_row("p_aaaaaaaaaaaa", "alpha", "vi", 2.0, 0.33, 2.0),
    board_row("p_bbbbbbbbbbbb", "beta", "sgld", 0.2, 0.04, 0.01),
    board_row("p_bbbbbbbbbbbb", "beta", "vi", 0.1, 0.02, -0.01),
]


@pytest.fixture
def campaign(tmp_path):
    """A finished campaign's files, as a tune run leaves them (no flow run here: the
    commands read files, and the flow test checks them on a real run's files)."""
    results, artifacts = tmp_path / "results", tmp_path / "artifacts"
    write_leaderboard(results / "leaderboard.parquet", BOARD)
    runs = []
    for row in BOARD:
        for trial in range(3):
            runs.append({
                "run_id": f"r_{row['pid'][2:]}{row['method']}{trial}", "stage": "search",
                "study_name": row["study_name"], "pid": row["pid"], "method": row["method"],
                "problem_name": row["problem_name"], "config_id": f"c_{trial}",
                "trial_number": trial, "trial_state": "complete", "status": "ok",
                "trial_objective": 0.1 * (trial + 1), "objective": 0.1 * (trial + 1),
                "rel_error": 0.02 * (trial + 1), "full_grad_equiv": 1000.0 * (trial + 1),
                "llc_hat": row["llc_ref"] + 0.1,
                "hyperparams": {"step_size": 1e-4 * (trial + 1)} if row["method"] == "sgld"
                else {"learning_rate": 1e-3 * (trial + 1)},
            })  # fmt: skip
    append_rows(results / "runs.parquet", runs)
    for pid, name in (("p_aaaaaaaaaaaa", "alpha"), ("p_bbbbbbbbbbbb", "beta")):
        llc = next(r["llc_ref"] for r in BOARD if r["pid"] == pid)
        save_record(artifacts, {
            "pid": pid, "name": name, "llc_ref": llc, "se_ref": 0.04, "quality": "trusted",
            "quality_reasons": [], "rhat": 1.0, "ess": 900.0, "divergences": 0,
            "transitions": 8000, "budget_exhausted": False, "halves": None,
        })  # fmt: skip
    spaces = {m: s.model_dump(mode="json") for m, s in load_methods().items()}
    save_run(results, describe_run(
        command="python flows/tune.py --n-trials 4", problems="greek", methods=["sgld", "vi"],
        search={"n_trials": 4, "repeats": 3, "validate_top_k": 1, "validation_seeds": 5},
        sampler="TPE", cluster={"kind": "local"}, spaces=spaces,
    ))  # fmt: skip
    return tmp_path


def lambda_hat(*args: str, cwd: Path, umask: int | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "lambda_hat", *args]
    if umask is not None:  # (through a shell: a preexec_fn would fork this JAX process)
        command = ["sh", "-c", f'umask {umask:03o}; exec "$0" "$@"', *command]
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "LAMBDA_HAT_RESULTS_DIR": str(cwd / "results"),
             "LAMBDA_HAT_ARTIFACTS_DIR": str(cwd / "artifacts")},
    )  # fmt: skip


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_help_of_every_command_writes_no_file(tmp_path):
    for command in (None, *COMMANDS):
        before = tree(tmp_path)
        done = lambda_hat(*([command] if command else []), "--help", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout
        assert tree(tmp_path) == before, command  # (nothing named --help, no lock file)


def test_leaderboard_prints_every_method_and_its_verdict(campaign):
    done = lambda_hat("leaderboard", cwd=campaign)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["problem", "pid", "method"]
    assert "vi ★" in done.stdout and "sgld ★" in done.stdout  # each problem's best marked
    assert "tuned: step_size 0.000123" in done.stdout  # 3 significant figures
    verdicts = [line for line in lines if line.startswith(("sgld:", "vi:"))]
    assert verdicts == [summary.verdict for summary in method_summaries(BOARD)]
    assert verdicts[1].startswith("vi: 2.0–33.0 % relative error on 2 problems")
    assert "fails (> 10 %) on 1 of 2" in verdicts[1]
    markdown = lambda_hat("leaderboard", "--format", "markdown", cwd=campaign)
    assert markdown.returncode == 0 and "| problem | pid | method |" in markdown.stdout


def test_report_rebuilds_the_page_with_the_answer_on_top(campaign):
    done = lambda_hat("report", cwd=campaign, umask=0o027)
    assert done.returncode == 0, done.stderr
    page = campaign / "artifacts" / "report" / "index.html"
    html = page.read_text()
    answer = html.index('id="answer"')
    assert html.index("python flows/tune.py --n-trials 4") < answer  # run metadata first
    assert "4 trials × 3 repeats per study; top 1 × 5 fresh validation seeds" in html
    for anchor in ("answer", "leaderboard", "references", "problem-alpha", "calibration",
                   "glossary"):  # fmt: skip
        assert f'id="{anchor}"' in html and f'href="#{anchor}"' in html, anchor
    assert 'id="recipes"' not in html  # no recipe study: no section for one
    assert "transfer" not in html.split('id="glossary"')[0].lower()  # no held-out problems
    for summary in method_summaries(BOARD):
        assert escape(summary.verdict) in html
    assert re.search("fixed: [^<]*num_steps 3000", html)  # from the recorded spaces
    # The umask's mode (0o640 here), not mkstemp's private 0o600, on every file written.
    for path in [page, *page.parent.glob("*.png")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o640, path


def test_export_writes_methods_files_that_load_back_with_their_evidence(campaign, tmp_path):
    out = tmp_path / "exported"
    done = lambda_hat("export", "--out-dir", str(out), cwd=campaign)
    assert done.returncode == 0, done.stderr
    files = sorted(p.name for p in out.glob("*.yaml"))
    assert files == ["alpha-sgld.yaml", "alpha-vi.yaml", "beta-sgld.yaml", "beta-vi.yaml"]
    space = load_methods(out / "alpha-sgld.yaml")["sgld"]
    assert space.space == {} and space.config({}).step_size == pytest.approx(0.000123456)
    assert space.config({}).num_steps == 3000  # the default space's fixed value
    evidence = yaml.safe_load((out / "alpha-sgld.yaml").read_text())["evidence"]
    assert evidence["validated_error"] == {"mean": 0.3, "ci95": [pytest.approx(0.21), 0.39]}
    assert evidence["pid"] == "p_aaaaaaaaaaaa"


def test_commands_without_results_say_so_in_one_line(tmp_path):
    for command in ("leaderboard", "report", "export"):
        done = lambda_hat(command, cwd=tmp_path)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        assert "no leaderboard in" in done.stderr
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_keep_the_umasks_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "f.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.json").stat().st_mode) == 0o666 & ~umask


def test_the_user_guides_synopsis_shows_the_defaults_that_help_shows():
    """Every ``[--option value]`` in the user guide's synopsis of ``flows/tune.py`` is
    that option's default in the parser ``--help`` prints."""
    from flows.arguments import parser

    guide = (Path(__file__).resolve().parents[1] / "docs" / "user-guide.md").read_text()
    synopsis = guide.split("    python flows/tune.py [", 1)[1].split(
        "    python flows/reference", 1
    )[0]
    shown = dict(re.findall(r"\[--([a-z-]+) ([0-9][0-9.]*)\]", synopsis))
    assert {"n-trials", "batch", "repeats", "validate-top-k", "reference-draws"} <= set(shown)
    defaults = parser().parse_args([])
    for option, value in shown.items():
        default = getattr(defaults, option.replace("-", "_"))
        if default is None:  # (from the settings: LAMBDA_HAT_TUNING__*)
            from lambda_hat.settings import TuningSettings

            default = getattr(TuningSettings(), option.replace("-", "_"))
        assert float(value) == float(default), option


def test_leaderboard_update_rewrites_only_the_marked_block(campaign, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\n<!-- results:begin -->\nold, typed by hand\n"
                      "<!-- results:end -->\n\n## after\n")  # fmt: skip
    done = lambda_hat("leaderboard", "--update", str(readme), cwd=campaign)
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert text.startswith("# title\n\n<!-- results:begin -->") and text.endswith("## after\n")
    assert "typed by hand" not in text and "| alpha | p_aaaaaaaaaaaa | sgld ★ |" in text
    assert "python flows/tune.py --n-trials 4" in text  # where the numbers come from
    for summary in method_summaries(BOARD):
        assert f"- {summary.verdict}" in text
    unmarked = tmp_path / "plain.md"
    unmarked.write_text("no markers\n")
    done = lambda_hat("leaderboard", "--update", str(unmarked), cwd=campaign)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "--update" in done.stderr
    assert unmarked.read_text() == "no markers\n"


def test_an_output_that_cannot_be_written_is_refused_in_one_line(campaign):
    for args in (["report", "--out-dir", "/proc/version/report"],
                 ["export", "--out-dir", "/proc/version/x"],
                 ["leaderboard", "--update", "/proc/version/README.md"]):  # fmt: skip
        done = lambda_hat(*args, cwd=campaign)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, (args, done.stderr)
        assert "/proc/version is not a directory" in done.stderr
