#!/usr/bin/env bash
# The main job: tune SGLD, MCLMC and VI on the default problem set against HMC references
# (local Dask cluster, SQLite-backed Optuna, a local Prefect API).
# Arguments pass through: bash scripts/run.sh --problems smoke --methods sgld --n-trials 4
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# Without PREFECT_API_URL, Prefect starts a temporary local server; on 2 cores it needs
# more than the default 20 s to come up.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"
exec .venv/bin/python flows/tune.py "$@"
