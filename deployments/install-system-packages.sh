#!/usr/bin/env bash
# Debian/Ubuntu packages for the single-node SLURM and throwaway Postgres of
# slurm-local.sh and postgres-local.sh (and the end-to-end test). Needs root; idempotent.
set -euo pipefail
packages=(slurmctld slurmd slurm-client munge postgresql)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "error: installing ${missing[*]} needs root (apt-get)" >&2
    exit 1
fi
echo "installing ${missing[*]} (apt-get, about a minute)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages start services of their own on install where they can; ours are
# started by the scripts beside this one, on their own ports and directories.
