"""The layering docs/architecture.md describes, checked: the science package never imports
Prefect, the driver, the report and the command line never load JAX, and the code points
to no document outside the repository."""

import ast
import subprocess
import sys

import pytest

from .conftest import REPO

SCIENCE = sorted((REPO / "lambda_hat").rglob("*.py"))


def _imported_modules(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_the_science_package_never_imports_prefect():
    assert SCIENCE
    offenders = {
        str(path.relative_to(REPO))
        for path in SCIENCE
        if any(name.split(".")[0] == "prefect" for name in _imported_modules(path))
    }
    assert not offenders


@pytest.mark.parametrize(
    "module",
    [
        "lambda_hat.tuning.driver",
        "lambda_hat.tuning.validation",
        "lambda_hat.tuning.recipes",
        "lambda_hat.samplers.configs",
        "lambda_hat.reference.record",
        "lambda_hat.results.report",
        "lambda_hat.results.summary",
        "lambda_hat.results.campaign",
        "lambda_hat.cli",
    ],
)
def test_the_driver_report_and_cli_load_no_jax(module):
    """A fresh interpreter (this one has JAX loaded already) imports the module and lists
    what came with it."""
    probe = (
        f"import sys, {module}; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'jax', 'blackjax', 'optax'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"


def test_the_code_cites_no_design_document_outside_the_repository():
    tracked = [*SCIENCE, *(REPO / "flows").glob("*.py"), *(REPO / "tasks").glob("*.py")]
    citing = [str(p.relative_to(REPO)) for p in tracked if "DESIGN.md" in p.read_text()]
    assert not citing
    assert (REPO / "docs" / "architecture.md").exists()
