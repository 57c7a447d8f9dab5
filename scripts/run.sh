#!/usr/bin/env bash
# The main job: tune SGLD, MCLMC and VI on the default problem set against HMC references
# (local Dask cluster, SQLite-backed Optuna, a local Prefect server).
# Arguments pass through and override the defaults below (the last value of an option
# wins): bash scripts/run.sh --problems smoke --methods sgld --n-trials 4
#
# Laptop defaults, sized to finish in about 10 minutes on 2 cores (measured 10 min 49 s):
# 4 trials of 3 repeats per study, the best configuration validated on 5 fresh seeds. `python flows/tune.py`
# alone uses the thorough defaults (8 trials, top 3 validated on 8 seeds each) that a
# cluster run should use (docs: README, "What a reported error means").
LAPTOP_DEFAULTS=(--n-trials 4 --repeats 3 --validate-top-k 1 --validation-seeds 5)
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
export PREFECT_SERVER_ANALYTICS_ENABLED="${PREFECT_SERVER_ANALYTICS_ENABLED:-false}"

# With PREFECT_API_URL set, use that server. Otherwise start a local one for this run (its
# database stays in $PREFECT_HOME, ~/.prefect by default, so `prefect server start` shows
# these runs later): Prefect's own fallback would start a temporary server in every Dask
# worker process too.
if [ -z "${PREFECT_API_URL:-}" ]; then
    port=$(.venv/bin/python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    log="${TMPDIR:-/tmp}/lambda-hat-prefect-server-$port.log"
    setsid .venv/bin/prefect server start --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
    server_pid=$!
    trap 'kill -- -"$server_pid" 2>/dev/null || true' EXIT
    export PREFECT_API_URL="http://127.0.0.1:$port/api"
    echo "starting a local Prefect server at http://127.0.0.1:$port (log: $log)..." >&2
    for _ in $(seq 1 180); do
        if .venv/bin/python -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$PREFECT_API_URL/health" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "error: the Prefect server did not start; see $log" >&2
            exit 1
        fi
        sleep 1
    done
fi
.venv/bin/python flows/tune.py "${LAPTOP_DEFAULTS[@]}" "$@"
