#!/usr/bin/env bash
# A throwaway Postgres on loopback for the Optuna storage (trying the production path on
# one machine, and the end-to-end test). As root it runs the server as the `postgres` user
# (initdb refuses root).
#   deployments/postgres-local.sh up [STATE_DIR]     start; prints the storage URL export
#   deployments/postgres-local.sh down [STATE_DIR]   stop it
# PGPORT (default 55432), DB/user `lambda_hat`, password from LAMBDA_HAT_PG_PASSWORD
# (default: random, kept in STATE_DIR/password). TCP logins need the password.
set -euo pipefail
action="${1:?usage: postgres-local.sh up|down [STATE_DIR]}"
state="$(mkdir -p "${2:-.stack/postgres}" && cd "${2:-.stack/postgres}" && pwd)"
port="${PGPORT:-55432}"
bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -n "$bin" ] || { echo "error: no Postgres found (run deployments/install-system-packages.sh)" >&2; exit 1; }
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    as_pg=(runuser -u postgres --)
    chown postgres "$state"
    if ! runuser -u postgres -- test -x "$state"; then
        echo "error: the postgres user cannot reach $state (a parent directory is private); use a directory under /tmp or /var" >&2
        exit 1
    fi
fi

case "$action" in
up)
    if [ ! -f "$state/password" ]; then
        (umask 077; echo "${LAMBDA_HAT_PG_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}" >"$state/password")
    fi
    password="$(cat "$state/password")"
    if [ ! -f "$state/data/PG_VERSION" ]; then
        mkdir -p "$state/data"
        [ "$(id -u)" -eq 0 ] && chown postgres "$state/data"
        "${as_pg[@]}" "$bin/initdb" -D "$state/data" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 >"$state/initdb.log"
    fi
    "${as_pg[@]}" "$bin/pg_ctl" -D "$state/data" -l "$state/postgres.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $state -c fsync=off -c max_connections=200" start >/dev/null
    "${as_pg[@]}" "$bin/psql" -h "$state" -p "$port" -U postgres -qtA -v ON_ERROR_STOP=1 <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lambda_hat') THEN
    CREATE ROLE lambda_hat LOGIN PASSWORD '$password';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE lambda_hat OWNER lambda_hat'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'lambda_hat')\gexec
SQL
    echo "export LAMBDA_HAT_OPTUNA_STORAGE=postgresql+psycopg://lambda_hat:$password@127.0.0.1:$port/lambda_hat"
    ;;
down)
    if [ -f "$state/data/postmaster.pid" ]; then
        "${as_pg[@]}" "$bin/pg_ctl" -D "$state/data" -m fast -w stop >/dev/null
    fi
    ;;
*)
    echo "usage: postgres-local.sh up|down [STATE_DIR]" >&2
    exit 2
    ;;
esac
