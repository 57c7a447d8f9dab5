"""The pinned install: the lock file is what the suite runs with, and prefect.yaml agrees."""

from importlib.metadata import version

import yaml

from .conftest import REPO


def pins() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    pairs = (line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))
    return {name.lower(): pinned for name, pinned in pairs}


def test_the_environment_is_the_locked_one():
    locked = pins()
    for package in ("prefect", "optuna", "jax", "blackjax", "dask", "pyarrow", "pandas", "scipy"):
        assert version(package) == locked[package], package


def test_prefect_yaml_declares_the_locked_prefect():
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["prefect-version"]
    assert str(declared) == pins()["prefect"]
