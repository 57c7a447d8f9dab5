"""The main command as a user runs it: a real subprocess, real files."""

import json
import os
import subprocess
import sys

import jax


def run_cli(*args, cwd):
    # Share the test run's compilation cache, so a second CI run reuses the compiles.
    cache = jax.config.jax_compilation_cache_dir
    return subprocess.run(
        [sys.executable, "-m", "lambda_hat", *args],
        cwd=cwd,
        env={**os.environ, "LAMBDA_HAT_JAX_CACHE": cache},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_main_command_prints_a_table_and_writes_artifacts(tmp_path):
    done = run_cli(
        "reference", "--problems", "smoke", "--num-warmup", "100", "--num-draws", "100",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["problem", "pid", "d"]
    assert [line.split()[0] for line in lines[1:]] == ["rrr_3_2_3_r1", "dln_3_2_2_3_r1"]
    assert "draws per chain" in done.stderr  # progress
    refs = sorted((tmp_path / "artifacts" / "problems").glob("p_*/ref.json"))
    assert len(refs) == 2
    for ref in refs:
        data = json.loads(ref.read_text())
        assert data["n_draws"] == 400 and data["lambda_theory"] in (3.5, 3.0)
        assert (ref.parent / "spec.yaml").exists()
    assert len(list((tmp_path / "results" / "targets").glob("p_*/target.npz"))) == 2


def test_bad_input_exits_non_zero_with_one_line_and_writes_nothing(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("problems:\n  - name: a\n    model: {family: dln, widths: []}\n")
    cases = [
        (("--problems", "missing.yaml"), "no such file or preset"),
        (("--problems", str(bad_yaml)), "problems.0.model.dln.widths"),
        (("--num-chains", "2"), "num_chains"),
        (("--budget-sec", "0"), "--budget-sec: must be > 0"),
        (("--algorithm", "mala"), "argument --algorithm: invalid choice: 'mala'"),
        (("--num-draws", "many"), "argument --num-draws: invalid int value"),
    ]
    for args, message in cases:
        done = run_cli("reference", *args, cwd=tmp_path)
        assert done.returncode == 2, args
        assert message in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "results").exists()


def test_help_works(tmp_path):
    done = run_cli("--help", cwd=tmp_path)
    assert done.returncode == 0 and "reference" in done.stdout and "compact" in done.stdout
    done = run_cli("reference", "--help", cwd=tmp_path)
    assert done.returncode == 0 and "--problems" in done.stdout


def test_a_reference_from_the_cli_is_the_flows_cached_reference(prefect_server, lambda_hat_env):
    """``python -m lambda_hat reference`` writes the ref.json the tune flow reads as its
    cached reference (one writer, one cache key): the flow samples no reference and tunes
    against the command's llc_ref; the command then shows it as cached."""
    from flows.tune import tune
    from lambda_hat.results.tables import read_rows

    from .test_flows import FAST_METHODS

    small = ("--num-warmup", "100", "--num-draws", "200")
    done = run_cli("reference", "--problems", "smoke", *small, cwd=lambda_hat_env)
    assert done.returncode == 0, done.stderr
    written = {
        ref["pid"]: ref
        for ref in (
            json.loads(path.read_text())
            for path in (lambda_hat_env / "artifacts" / "problems").glob("p_*/ref.json")
        )
    }
    assert len(written) == 2 and all(ref["name"] for ref in written.values())
    methods_file = lambda_hat_env / "methods.yaml"
    methods_file.write_text(FAST_METHODS)
    result = tune(
        problems="smoke", methods=["sgld"], n_trials=1, repeats=1, pruner="none",
        validate_top_k=0, methods_file=str(methods_file), reference_warmup=100,
        reference_draws=200,
    )  # fmt: skip
    assert len(result["references"]) == 2
    for ref in result["references"]:
        assert ref["cached"], ref["name"]
        assert ref["hmc_run_id"] == written[ref["pid"]]["hmc_run_id"]  # not recomputed
    rows = read_rows(lambda_hat_env / "results" / "runs.parquet")
    assert rows and all(row["llc_ref"] == written[row["pid"]]["llc_ref"] for row in rows)
    again = run_cli("reference", "--problems", "smoke", *small, cwd=lambda_hat_env)
    assert again.returncode == 0, again.stderr
    assert [line.endswith("(cached)") for line in again.stdout.splitlines()[1:]] == [True] * 2
    assert "draws per chain" not in again.stderr  # nothing sampled


def test_the_cli_with_other_settings_never_leaves_the_run_and_ref_json_apart(
    prefect_server, lambda_hat_env
):
    """The reference flow computes a reference (a cached task); the CLI, with other
    settings, writes its own over ref.json; the flow run again serves its cached reference
    and writes it back, so the file says what the run tunes against."""
    from flows.reference import reference

    small = {"problems": "smoke", "num_warmup": 100, "num_draws": 200}
    first = {ref["pid"]: ref for ref in reference(**small)}
    other = run_cli("reference", "--problems", "smoke", "--num-warmup", "100",
                    "--num-draws", "150", cwd=lambda_hat_env)  # fmt: skip
    assert other.returncode == 0, other.stderr

    def on_disk():
        folder = lambda_hat_env / "artifacts" / "problems"
        return {pid: json.loads((folder / pid / "ref.json").read_text()) for pid in first}

    assert all(on_disk()[pid]["n_draws"] != first[pid]["n_draws"] for pid in first)
    again = reference(**small)
    for ref in again:
        assert ref["cached"] and ref["hmc_run_id"] == first[ref["pid"]]["hmc_run_id"]
        assert on_disk()[ref["pid"]]["hmc_run_id"] == ref["hmc_run_id"]
        assert on_disk()[ref["pid"]]["llc_ref"] == ref["llc_ref"]
