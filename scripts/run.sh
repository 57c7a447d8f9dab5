#!/usr/bin/env bash
# The main job: HMC reference LLCs for the default problem set, as a table.
# Arguments pass through: bash scripts/run.sh --problems smoke --num-draws 500
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec .venv/bin/python -m lambda_hat "$@"
