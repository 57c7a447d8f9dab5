#!/usr/bin/env bash
# The whole test suite: lint, then pytest (unit tests, doctests, CLI tests).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
