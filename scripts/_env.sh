# Sourced by run.sh and test.sh: a project venv in .venv with the package and dev extras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DO_NOT_TRACK=1
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv and installing lambda_hat (about a minute)..." >&2
    python3 -m venv .venv
fi
# Re-install only when pyproject.toml or the lock changed since the last install. The lock
# pins every package to the version the test suite passed with (scripts/lock.sh makes it);
# the package itself goes on top, without re-resolving.
stamp=.venv/.lambda_hat_installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ requirements.lock -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null
    .venv/bin/python -m pip install --quiet -r requirements.lock
    .venv/bin/python -m pip install --quiet --no-deps -e .
    touch "$stamp"
fi
