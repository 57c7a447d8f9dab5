"""Security (issue 6): nothing is unpickled from the results directory, YAML is only
``safe_load``ed, paths built from IDs are validated, and secrets are masked. The scan of
every output of a real run for the Postgres password is in tests/test_e2e_stack.py."""

import json
import re

import pytest

from lambda_hat.ids import validate_id
from lambda_hat.problems.specs import SpecError, load_problem_set
from lambda_hat.samplers.configs import MethodConfigError
from lambda_hat.settings import Settings
from lambda_hat.tuning.storage import StorageError, check_storage
from tasks.reference import hmc_reference
from tasks.runs import run_group_task, run_method_task

from .conftest import REPO

UNSAFE = re.compile(
    r"\bpickle\b|cloudpickle|allow_pickle=True|yaml\.load\(|yaml\.unsafe_load|\beval\("
)


def test_no_unsafe_deserialisation_in_the_code():
    sources = [p for d in ("lambda_hat", "tasks", "flows") for p in (REPO / d).rglob("*.py")]
    offending = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if UNSAFE.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offending, offending


def test_persisted_task_results_are_json_not_pickles():
    # Prefect's default result serializer is cloudpickle: a cache entry in the results
    # directory would be unpickled on the next cache hit.
    assert run_method_task.result_serializer == "json"
    assert run_group_task.result_serializer == "json"
    assert hmc_reference.result_serializer == "json"


@pytest.mark.parametrize("bad", ["../etc", "r_../x", "p_ABC", "r_a/b", "", "r_a\x00"])
def test_ids_that_could_escape_a_directory_are_refused(bad):
    with pytest.raises(ValueError, match="allowed characters are"):
        validate_id(bad)


def test_trial_task_refuses_a_method_name_that_is_not_a_method(tmp_path):
    spec = load_problem_set("smoke").problems[0].model_dump(mode="json")
    with pytest.raises(MethodConfigError, match="unknown method '../../x'"):
        run_method_task.fn(
            "r_0123", spec, "../../x", {}, 0, 1.0, str(tmp_path), str(tmp_path), str(tmp_path)
        )
    assert not (tmp_path / "runs").exists()


def test_problem_names_cannot_be_path_tricks(tmp_path):
    for name in ("..", ".hidden", "-rf", "a/b"):
        path = tmp_path / "p.yaml"
        spec = load_problem_set("smoke").problems[0].model_dump(mode="json")
        spec["name"] = name
        path.write_text(json.dumps({"problems": [spec]}))
        with pytest.raises(SpecError, match="name"):
            load_problem_set(str(path))


def test_the_storage_password_is_masked_everywhere_it_could_show(monkeypatch):
    url = "postgresql+psycopg://lh:Zq7-SECRET@127.0.0.1:1/lh"
    monkeypatch.setenv("LAMBDA_HAT_OPTUNA_STORAGE", url)
    settings = Settings()
    shown = [repr(settings), str(settings), str(settings.public()), str(settings.model_dump())]
    with pytest.raises(StorageError) as error:
        check_storage(settings.storage_url())
    shown.append(str(error.value))
    assert all("Zq7-SECRET" not in text for text in shown), shown
