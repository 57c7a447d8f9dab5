#!/usr/bin/env bash
# Re-resolve the dependency ranges of pyproject.toml in a fresh virtual environment and
# write the result to requirements.lock, the versions scripts/_env.sh (and so CI) installs.
# Run the whole test suite (bash scripts/test.sh) before committing a new lock.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
"$scratch/venv/bin/python" -m pip install --quiet -e ".[dev]"
{
    echo "# The versions the test suite passed with; installed by scripts/_env.sh."
    echo "# Upgrade: bash scripts/lock.sh, then bash scripts/test.sh, then commit."
    "$scratch/venv/bin/python" -m pip freeze --exclude-editable --all | grep -v -E '^(pip|setuptools|wheel)=='
} > requirements.lock.new
mv requirements.lock.new requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
