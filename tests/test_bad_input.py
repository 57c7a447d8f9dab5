"""Bad input (issue 6): every case exits 2 with one line that names the problem, within
seconds, and writes nothing (an existing results directory is left byte for byte as it was).
All go through ``python flows/tune.py``'s entry point, as a user's typo would."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.tune import main as tune_main
from lambda_hat.problems.specs import load_problem_set

GOOD_PROBLEM = load_problem_set("smoke").problems[0].model_dump(mode="json")
GOOD_DLN = load_problem_set("smoke").problems[1].model_dump(mode="json")


def problem(**changes) -> str:
    """A problems file with one smoke problem, sections changed as given."""
    spec = json.loads(json.dumps(GOOD_PROBLEM))
    for section, value in changes.items():
        if isinstance(value, dict):
            spec[section].update(value)
        else:
            spec[section] = value
    return json.dumps({"problems": [spec]})


def digits(**changes) -> str:
    """A problems file with the first digits problem, sections changed as given."""
    spec = load_problem_set("digits").problems[0].model_dump(mode="json")
    for section, value in changes.items():
        spec[section].update(value)
    return json.dumps({"problems": [spec]})


def custom(factory: str, n: int = 10) -> str:
    """A problems file with one custom problem (factories in tests/factories.py)."""
    spec = {"name": "mine", "model": {"family": "custom", "factory": factory}, "data": {"n": n}}
    return json.dumps({"problems": [spec]})


def _damaged_db() -> bytes:
    """A real Optuna SQLite file with trials, cut short as a full disk or a killed copy
    leaves it: it still opens and answers SELECT 1; its pages do not."""
    import tempfile

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(tempfile.mkdtemp()) / "o.db"
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="p_x:sgld")
    study.optimize(lambda trial: trial.suggest_float("a", 0, 1), n_trials=30)
    whole = path.read_bytes()
    return whole[: len(whole) // 2]


DAMAGED_DB = _damaged_db()

SGLD_SPACE = "methods:\n  sgld:\n    space:\n      step_size: {}\n"

# (case, argv, files {name: text}, env {var: value}, what the one line must contain)
CASES = [
    ("problems: malformed YAML", ["--problems", "p.yaml"], {"p.yaml": "problems: [{name: x"},
     {}, "p.yaml: malformed YAML at line 1"),
    ("problems: unknown family", ["--problems", "p.yaml"],
     {"p.yaml": problem(model={"family": "cnn"})}, {},
     "problems.0.model: Input tag 'cnn' found using 'family' does not match"),
    ("problems: unknown activation", ["--problems", "p.yaml"],
     {"p.yaml": problem(model={"family": "mlp", "widths": [2, 4, 1], "activation": "swish"},
                        teacher={"widths": [2, 3, 1]})}, {},
     "problems.0.model.mlp.activation: Input should be 'tanh', 'relu' or 'gelu'"),
    ("problems: n out of range", ["--problems", "p.yaml"],
     {"p.yaml": problem(data={"n": 0})}, {},
     "problems.0.data.n: Input should be greater than or equal to 2"),
    ("problems: negative noise", ["--problems", "p.yaml"],
     {"p.yaml": problem(data={"noise_sigma": -1.0})}, {},
     "problems.0.data.noise_sigma: Input should be greater than or equal to 0.000001"),
    ("problems: rank above the smallest width", ["--problems", "p.yaml"],
     {"p.yaml": problem(teacher={"rank": 9})}, {},
     "teacher.rank: must be <= the smallest width 2, got 9"),
    ("problems: empty set", ["--problems", "p.yaml"], {"p.yaml": "problems: []\n"}, {},
     "p.yaml: problems: must list at least one problem"),
    ("problems: not a mapping", ["--problems", "p.yaml"], {"p.yaml": "- a\n- b\n"}, {},
     "p.yaml: problems.0: Input should be a valid dictionary"),
    ("problems: a name that escapes a directory", ["--problems", "p.yaml"],
     {"p.yaml": problem(name="../../etc")}, {},
     "problems.0.name: String should match pattern"),
    ("problems: no such file or preset", ["--problems", "nope.yaml"], {}, {},
     "problems: no such file or preset 'nope.yaml'"),
    ("holdout: no such file or preset", ["--holdout", "nope.yaml"], {}, {},
     "holdout: no such file or preset 'nope.yaml'"),
    ("recipe: huber objective", ["--recipe", "--objective", "huber"], {}, {},
     "objective: 'huber' is for per-problem studies; a recipe's objective is the mean"),
    ("holdout: a tuning problem", ["--problems", "smoke", "--holdout", "smoke"], {}, {},
     "holdout: rrr_3_2_3_r1 is the tuning problem rrr_3_2_3_r1"),
    ("cli: unknown method", ["--methods", "nuts"], {}, {},
     "argument --methods: invalid choice: 'nuts'"),
    ("cli: n-trials out of range", ["--n-trials", "0"], {}, {},
     "argument --n-trials: must be between 1 and 100000, got 0"),
    ("cli: batch not a number", ["--batch", "two"], {}, {},
     "argument --batch: expected an integer, got 'two'"),
    ("cli: unknown objective", ["--objective", "mse"], {}, {},
     "argument --objective: invalid choice: 'mse'"),
    ("cli: negative huber-k", ["--huber-k", "-1"], {}, {}, "argument --huber-k: must be > 0"),
    ("cli: no repeats", ["--repeats", "0"], {}, {},
     "argument --repeats: must be between 1 and 100, got 0"),
    ("cli: unknown pruner", ["--pruner", "hyperband"], {}, {},
     "argument --pruner: invalid choice: 'hyperband'"),
    ("cli: one validation seed gives no interval", ["--validation-seeds", "1"], {}, {},
     "argument --validation-seeds: must be between 2 and 1000, got 1"),
    ("cli: negative top-k", ["--validate-top-k", "-1"], {}, {},
     "argument --validate-top-k: must be between 0 and 100, got -1"),
    ("search space: no such file", ["--methods-file", "nope.yaml"], {}, {},
     "methods: no such file 'nope.yaml'"),
    ("search space: malformed YAML", ["--methods-file", "m.yaml"],
     {"m.yaml": "methods: {sgld: [}"}, {}, "m.yaml: malformed YAML"),
    ("search space: low > high", ["--methods-file", "m.yaml"],
     {"m.yaml": SGLD_SPACE.format("{type: float, low: 1.0e-3, high: 1.0e-5}")}, {},
     "methods.sgld.space.step_size.float: low must be below high (got low=0.001, high=1e-05)"),
    ("search space: log with low <= 0", ["--methods-file", "m.yaml"],
     {"m.yaml": SGLD_SPACE.format("{type: float, low: 0.0, high: 1.0e-3, log: true}")}, {},
     "step_size.float: log scale needs low > 0 (got low=0.0)"),
    ("search space: unknown hyperparameter", ["--methods-file", "m.yaml"],
     {"m.yaml": "methods:\n  sgld:\n    space:\n      stepsize: {type: float, low: 1, high: 2}\n"},
     {}, "m.yaml: methods.sgld: sgld.stepsize: unknown field"),
    ("search space: unknown method", ["--methods-file", "m.yaml"],
     {"m.yaml": "methods:\n  hmc: {fixed: {}}\n"}, {},
     "m.yaml: methods.hmc: unknown method (allowed: mclmc, psgld, sgld, vi)"),
    ("settings: unknown cluster kind", [], {}, {"LAMBDA_HAT_CLUSTER__KIND": "kubernetes"},
     "settings (LAMBDA_HAT_*): cluster.kind: Input should be"),
    ("settings: no repeats", [], {}, {"LAMBDA_HAT_TUNING__REPEATS": "0"},
     "tuning.repeats: Input should be greater than or equal to 1"),
    ("settings: negative trial budget", [], {}, {"LAMBDA_HAT_BUDGETS__TRIAL_SEC": "-5"},
     "budgets.trial_sec: Input should be greater than 0"),
    ("settings: scheduler address without scheme", [], {},
     {"LAMBDA_HAT_CLUSTER__KIND": "address", "LAMBDA_HAT_CLUSTER__SCHEDULER_ADDRESS": "h:8786"},
     "cluster.scheduler_address: expected e.g. tcp://host:8786, got 'h:8786'"),
    ("settings: address kind without an address", [], {},
     {"LAMBDA_HAT_CLUSTER__KIND": "address"},
     "cluster.scheduler_address: required when cluster.kind is 'address'"),
    ("settings: missing cluster profile", [], {},
     {"LAMBDA_HAT_CLUSTER__KIND": "slurm", "LAMBDA_HAT_CLUSTER__PROFILE": "nope.yaml"},
     "cluster.profile: no such file 'nope.yaml'"),
    ("settings: profile with an unknown key", [],
     {"prof.yaml": "trials: {}\nreference: {}\nextra: 1\n"},
     {"LAMBDA_HAT_CLUSTER__KIND": "slurm", "LAMBDA_HAT_CLUSTER__PROFILE": "prof.yaml"},
     "prof.yaml: extra: unknown field"),
    ("storage: unreachable Postgres", [], {},
     {"LAMBDA_HAT_OPTUNA_STORAGE": "postgresql+psycopg://lh:s3cret@127.0.0.1:1/lh"},
     "optuna_storage postgresql+psycopg://lh:***@127.0.0.1:1/lh: cannot connect"),
    ("storage: unknown driver", [], {}, {"LAMBDA_HAT_OPTUNA_STORAGE": "nosuchdb://x"},
     "optuna_storage nosuchdb://x: unknown database driver"),
    # Non-finite and absurd numbers, anywhere a number is read (issue 16, item 2).
    ("problems: infinite noise", ["--problems", "p.yaml"],
     {"p.yaml": problem().replace('"noise_sigma": 0.5', '"noise_sigma": .inf')}, {},
     "problems.0.data.noise_sigma: Input should be a finite number"),
    ("problems: NaN input scale", ["--problems", "p.yaml"],
     {"p.yaml": problem().replace('"scale": 1.0', '"scale": .nan')}, {},
     "problems.0.data.input.scale: Input should be a finite number"),
    ("cli: infinite huber-k", ["--huber-k", "inf"], {}, {},
     "argument --huber-k: must be > 0 and <= 100, got inf"),
    ("cli: a billion reference draws", ["--reference-draws", "1000000000"], {}, {},
     "argument --reference-draws: must be between 4 and 1000000, got 1000000000"),
    ("settings: infinite stall timeout", [], {}, {"LAMBDA_HAT_BUDGETS__STALL_SEC": "inf"},
     "budgets.stall_sec: Input should be a finite number"),
    ("settings: a trial budget of 30000 years", [], {},
     {"LAMBDA_HAT_BUDGETS__TRIAL_SEC": "1e12"},
     "budgets.trial_sec: Input should be less than or equal to 604800"),
    ("settings: NaN memory limit", [], {}, {"LAMBDA_HAT_MEMORY_LIMIT_GB": "nan"},
     "memory_limit_gb: Input should be a finite number"),
    ("search space: infinite bound", ["--methods-file", "m.yaml"],
     {"m.yaml": SGLD_SPACE.format("{type: float, low: 1.0e-6, high: .inf}")}, {},
     "step_size.float.high: Input should be a finite number"),
    # Sizes that cannot fit (item 1): refused from the estimate, before anything runs.
    ("problems: a trillion samples", ["--problems", "p.yaml"],
     {"p.yaml": problem(data={"n": 10**12})}, {},
     "problems[0] (rrr_3_2_3_r1): data.n needs about 596.6 TiB of memory, over the limit"),
    ("problems: a layer too wide for its Hessian", ["--problems", "p.yaml"],
     {"p.yaml": json.dumps({"problems": [{**GOOD_DLN, "model": {"family": "dln",
                                                                 "widths": [3, 5000, 3]}}]})},
     {}, "problems[0] (dln_3_2_2_3_r1): model (parameters) needs about"),
    ("problems: over a configured memory limit", [], {},
     {"LAMBDA_HAT_MEMORY_LIMIT_GB": "0.0001"},
     "of memory, over the limit of 104.9 KiB (LAMBDA_HAT_MEMORY_LIMIT_GB)"),
    # Search-space choices of mixed types (item 3).
    ("search space: choices of mixed types", ["--methods-file", "m.yaml"],
     {"m.yaml": "methods:\n  sgld:\n    space:\n      batch_size: "
                "{type: categorical, choices: [32, '64', 128.0, true]}\n"}, {},
     "batch_size.categorical: choices must all be of one type, got bool, float, int, str"),
    # Smaller ones (item 7).
    ("problems: not UTF-8", ["--problems", "p.yaml"],
     {"p.yaml": problem().encode() + bytes([0xFF, 0xFE])}, {},
     "problems: p.yaml is not UTF-8 text (byte 0xff at offset"),
    ("problems: one problem under two names", ["--problems", "p.yaml"],
     {"p.yaml": json.dumps({"problems": [GOOD_PROBLEM, {**GOOD_PROBLEM, "name": "again"}]})},
     {}, "rrr_3_2_3_r1 and again are the same problem"),
    ("storage: SQLite file under a file", [], {},
     {"LAMBDA_HAT_OPTUNA_STORAGE": "sqlite:////proc/version/o.db"},
     "optuna_storage /proc/version/o.db: /proc/version is not a directory"),
    ("dirs: results_dir under a file", [], {},
     {"LAMBDA_HAT_RESULTS_DIR": "/proc/version/results"},
     "results_dir /proc/version/results: /proc/version is not a directory"),
    ("dirs: artifacts_dir not writable", [], {},
     {"LAMBDA_HAT_ARTIFACTS_DIR": "/proc/sys/lambda_hat"},
     "artifacts_dir /proc/sys/lambda_hat: /proc/sys is not writable"),
    # Round 3 of hardening. sysfs passes access() but refuses mkdir (EPERM), even to root.
    ("dirs: results_dir that cannot be created", [], {},
     {"LAMBDA_HAT_RESULTS_DIR": "/sys/lambda_hat_results"},
     "results_dir /sys/lambda_hat_results: cannot create anything in /sys"),
    ("storage: a damaged optuna.db", [], {"results/optuna.db": DAMAGED_DB}, {},
     "the database is damaged (database disk image is malformed); restore it"),
    ("storage: a file that is not a database", [], {"results/optuna.db": b"x" * 4096}, {},
     "the database is damaged (file is not a database)"),
    ("problems: a directory", ["--problems", "some_dir"], {"some_dir/a.txt": "x"}, {},
     "problems: 'some_dir' is a directory; give a YAML file or a preset"),
    ("methods file: a directory", ["--methods-file", "some_dir"], {"some_dir/a.txt": "x"}, {},
     "methods: 'some_dir' is a directory; give a YAML file"),
    ("methods: one named twice", ["--methods", "sgld", "vi", "sgld"], {}, {},
     "methods: sgld given more than once"),
    ("warm start: no such file", ["--warm-start", "nope.yaml"], {}, {},
     "--warm-start: no such file 'nope.yaml'"),
    ("warm start: a recipe outside the search space", ["--warm-start", "r.yaml"],
     {"r.yaml": "methods:\n  sgld: {fixed: {step_size: 0.5, batch_size: 64, decay_exponent: 0}}\n"},
     {}, "r.yaml: methods.sgld.fixed.step_size: 0.5 is outside the search space [1e-06, 0.01]"),
    ("warm start: no method tuned here", ["--methods", "vi", "--warm-start", "r.yaml"],
     {"r.yaml": "methods:\n  sgld: {fixed: {step_size: 0.001}}\n"}, {},
     "r.yaml: fixes none of the methods tuned here (vi)"),
    ("problems: an input scale that overflows", ["--problems", "p.yaml"],
     {"p.yaml": problem(data={"input": {"scale": 1e200}})}, {},
     "problems.0.data.input.scale: Input should be less than or equal to 1000000"),
    ("problems: a noise that overflows 1/σ²", ["--problems", "p.yaml"],
     {"p.yaml": problem(data={"noise_sigma": 1e-200})}, {},
     "problems.0.data.noise_sigma: Input should be greater than or equal to 0.000001"),
    ("problems: a categorical linear network", ["--problems", "p.yaml"],
     {"p.yaml": problem(data={"likelihood": "categorical"})}, {},
     "problems.0: data.likelihood: categorical needs model.family mlp"),
    ("problems: a noise level for a classifier", ["--problems", "p.yaml"],
     {"p.yaml": digits(data={"n": 100, "likelihood": "categorical", "noise_sigma": 0.3})}, {},
     "problems.0: data.noise_sigma: only for likelihood gaussian"),
    ("problems: more digits than ship", ["--problems", "p.yaml"],
     {"p.yaml": digits(data={"n": 5000})}, {},
     "problems.0: data.n: digits has 1797 images, got 5000"),
    ("problems: digits into the wrong widths", ["--problems", "p.yaml"],
     {"p.yaml": digits(model={"widths": [8, 4, 10]})}, {},
     "problems.0: model.widths: digits need input 64 and output 10, got (8, 10)"),
    ("problems: a factory that does not import", ["--problems", "p.yaml"],
     {"p.yaml": custom("no_such_package.models:make")}, {},
     "problems.0: model.factory 'no_such_package.models:make': cannot import "
     "no_such_package.models (ModuleNotFoundError"),
    ("problems: a factory that is not there", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests.factories:absent")}, {},
     "model.factory 'tests.factories:absent': tests.factories has no function absent"),
    ("problems: a factory that is not a module:function", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests/factories.py")}, {},
     "problems.0.model.custom.factory: String should match pattern"),
    ("problems: a factory returning the wrong type", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests.factories:returns_a_dict")}, {},
     "'tests.factories:returns_a_dict': returned dict, expected "
     "lambda_hat.problems.custom.CustomProblem"),
    ("problems: a factory whose x and y disagree", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests.factories:mismatched_rows")}, {},
     "'tests.factories:mismatched_rows': y has (9,) rows, x has 10"),
    ("problems: a factory with non-finite data", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests.factories:nan_inputs")}, {},
     "'tests.factories:nan_inputs': x: contains non-finite values (NaN or inf)"),
    ("problems: a factory whose model fails", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests.factories:broken_apply")}, {},
     "'tests.factories:broken_apply': apply(params, x) raised KeyError: 'missing'"),
    ("problems: a factory that raises", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests.factories:raises")}, {},
     "'tests.factories:raises': raised RuntimeError: cannot find my checkpoint"),
    ("problems: a factory's n disagrees with the spec", ["--problems", "p.yaml"],
     {"p.yaml": custom("tests.factories:good", n=12)}, {},
     "problems.0: data.n: the factory returned 10 samples, not 12"),
]  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("argv", "files", "env", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_exits_2_with_one_clear_line_and_writes_nothing(
    argv, files, env, message, capsys, monkeypatch, lambda_hat_env
):
    monkeypatch.chdir(lambda_hat_env)
    for name, text in files.items():
        (lambda_hat_env / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            (lambda_hat_env / name).write_bytes(text)
        else:
            (lambda_hat_env / name).write_text(text)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    # A campaign's results already exist: bad input must leave them exactly as they were.
    (lambda_hat_env / "results").mkdir(exist_ok=True)
    (lambda_hat_env / "results" / "runs.parquet").write_bytes(b"rows of an earlier campaign")
    before = snapshot(lambda_hat_env)
    with pytest.raises(SystemExit) as exit_info:
        tune_main(["--problems", "smoke", *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "s3cret" not in err and "Traceback" not in err
    assert snapshot(lambda_hat_env) == before
    assert not (lambda_hat_env / "artifacts").exists()


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20 and len({case[0] for case in CASES}) == len(CASES)


HEAVY = ("jax", "blackjax", "prefect", "matplotlib", "optuna", "dask", "pyarrow")
# ``python flows/tune.py ARGS`` as a user types it, then what it had loaded by its exit.
PROBE = (
    "import runpy, sys\n"
    "sys.argv = sys.argv[1:]\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "finally:\n"
    f"    print('LOADED', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
)


@pytest.mark.parametrize(
    ("argv", "code"),
    [(["--problems", "bad.yaml"], 2), (["--methods-file", "bad.yaml"], 2), (["--dry-run"], 0)],
    ids=["bad problems", "bad methods file", "dry run"],
)
def test_refusals_and_dry_runs_answer_before_jax_prefect_or_matplotlib_load(
    argv, code, lambda_hat_env
):
    """Issue 25: checking the input (and printing the plan) needs none of the heavy
    libraries, so the answer comes in about a second, not after 10-40 s of imports."""
    (lambda_hat_env / "bad.yaml").write_text("problems: [{name: x\nmethods: {sgld: 1}\n")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(repo / "flows" / "tune.py"), "--problems", "smoke",
         *argv],
        cwd=lambda_hat_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == code, done.stderr
    loaded = [line for line in done.stderr.splitlines() if line.startswith("LOADED")]
    assert loaded == ["LOADED"], loaded  # none of HEAVY
    assert not (lambda_hat_env / "artifacts").exists()
