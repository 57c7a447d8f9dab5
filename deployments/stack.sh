#!/usr/bin/env bash
# The local Prefect stack: a Prefect server, the `lambda-hat` process work pool, and
# (with --worker) a worker polling it. Run from the repository root.
#   deployments/stack.sh up [--worker] [STATE_DIR]   start; prints `export PREFECT_API_URL=...`
#   deployments/stack.sh down [STATE_DIR]            stop what `up` started, by PID
# STATE_DIR (default ./.stack/prefect) holds PIDs, logs and PREFECT_HOME (the server's
# SQLite database; see docs/clusters.md for running the server on Postgres). PREFECT_PORT
# defaults to 4200.
set -euo pipefail
action="${1:?usage: stack.sh up [--worker] [STATE_DIR] | down [STATE_DIR]}"
shift
worker=false
if [ "${1:-}" = "--worker" ]; then worker=true; shift; fi
state="$(mkdir -p "${1:-.stack/prefect}" && cd "${1:-.stack/prefect}" && pwd)"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefect="$repo/.venv/bin/prefect"
port="${PREFECT_PORT:-4200}"
export PREFECT_HOME="${PREFECT_HOME:-$state/home}"
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
url="http://127.0.0.1:$port/api"

stop_pidfile() {  # stop_pidfile FILE: SIGTERM the process group in FILE, wait, then SIGKILL
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    kill -- -"$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 -- -"$pid" 2>/dev/null || true
    rm -f "$file"
}

case "$action" in
up)
    setsid "$prefect" server start --host 127.0.0.1 --port "$port" >"$state/server.log" 2>&1 &
    echo $! >"$state/server.pid"
    for _ in $(seq 1 180); do
        if "$repo/.venv/bin/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url/health" 2>/dev/null; then
            break
        fi
        if ! kill -0 "$(cat "$state/server.pid")" 2>/dev/null; then
            echo "error: the Prefect server exited; see $state/server.log" >&2
            exit 1
        fi
        sleep 1
    done
    export PREFECT_API_URL="$url"
    "$prefect" work-pool inspect lambda-hat >/dev/null 2>&1 \
        || "$prefect" work-pool create lambda-hat --type process >/dev/null
    if $worker; then
        (cd "$repo" && setsid "$prefect" worker start --pool lambda-hat >"$state/worker.log" 2>&1 &
         echo $! >"$state/worker.pid")
    fi
    echo "export PREFECT_API_URL=$url"
    ;;
down)
    stop_pidfile "$state/worker.pid"
    stop_pidfile "$state/server.pid"
    ;;
*)
    echo "usage: stack.sh up [--worker] [STATE_DIR] | down [STATE_DIR]" >&2
    exit 2
    ;;
esac
