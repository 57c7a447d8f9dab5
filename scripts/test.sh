#!/usr/bin/env bash
# The whole test suite: lint, then pytest (unit tests, doctests, flows on a real Prefect
# server, and the end-to-end test on a real SLURM + Postgres + Prefect stack).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
if [ "${LAMBDA_HAT_SKIP_E2E:-}" != "1" ]; then
    # SLURM, munge and Postgres for the end-to-end test (apt-get, needs root; idempotent).
    bash deployments/install-system-packages.sh
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
