#!/usr/bin/env bash
# The main job: tune SGLD, MCLMC and VI on the default problem set against HMC references
# (local Dask cluster, SQLite-backed Optuna, a local Prefect server).
# Arguments pass through and override the defaults below (the last value of an option
# wins): bash scripts/run.sh --problems smoke --methods sgld --n-trials 4
#
# Laptop defaults, sized to finish in about 10 minutes on 2 cores (measured 7 min 48 s, and
# 10 min 19 s on a slower day when the code before it took 11 min 1 s; 21 min 18 s on
# 2026-12-02 on a VM running at half its morning pace):
# 4 trials of 3 repeats per study, the best configuration validated on 5 fresh seeds. `python flows/tune.py`
# alone uses the thorough defaults (8 trials, top 3 validated on 8 seeds each) that a
# cluster run should use (docs/user-guide.md, "What a reported error means").
LAPTOP_DEFAULTS=(--n-trials 4 --repeats 3 --validate-top-k 1 --validation-seeds 5)
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
# With PREFECT_API_URL unset, flows/tune.py starts a local Prefect server for the run (its
# database stays in $PREFECT_HOME, ~/.prefect by default, so `prefect server start` shows
# these runs later) and stops it at the end.
exec .venv/bin/python flows/tune.py "${LAPTOP_DEFAULTS[@]}" "$@"
