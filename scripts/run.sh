#!/usr/bin/env bash
# The main job: tune SGLD, MCLMC and VI on the default problem set against HMC references
# (local Dask cluster, SQLite-backed Optuna, a local Prefect server).
# Arguments pass through to flows/tune.py: bash scripts/run.sh --problems smoke --methods sgld
#
# It uses flows/tune.py's own defaults, the thorough ones: 8 trials of 3 repeats per study,
# the top 3 configurations validated on 8 fresh seeds each. Measured on a fresh clone on 2
# cores: 8 min 16 s (2026-12-02), since the cheap methods read a linear network's second
# moments (before, the same job needed smaller "laptop defaults", 4 trials and the best
# configuration on 5 seeds, to finish in 10 to 21 minutes).
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# With PREFECT_API_URL unset, flows/tune.py starts a local Prefect server for the run (its
# database stays in $PREFECT_HOME, ~/.prefect by default, so `prefect server start` shows
# these runs later) and stops it at the end.
exec .venv/bin/python flows/tune.py "$@"
