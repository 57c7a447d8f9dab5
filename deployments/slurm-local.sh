#!/usr/bin/env bash
# A single-node SLURM (munge, slurmctld, slurmd) for trying lambda_hat's SLURM profile on
# one machine, and for the end-to-end test. Root only (SlurmUser=root).
#   deployments/slurm-local.sh up [STATE_DIR]     start; prints `export SLURM_CONF=...`
#   deployments/slurm-local.sh down [STATE_DIR]   stop everything it started, by PID
# STATE_DIR defaults to ./.stack/slurm. CPUS (default 8) and MEMORY_MB (default 80 % of
# the machine's) are what the node declares: more than the machine has is fine
# (SlurmdParameters=config_overrides) for many small workers.
set -euo pipefail
action="${1:?usage: slurm-local.sh up|down [STATE_DIR]}"
state="$(mkdir -p "${2:-.stack/slurm}" && cd "${2:-.stack/slurm}" && pwd)"
conf="$state/slurm.conf"
host="$(hostname -s)"

stop_pidfile() {  # stop_pidfile FILE: SIGTERM the PID in FILE and wait for it to exit
    local file="$1" pid
    [ -f "$file" ] || return 0
    pid="$(cat "$file")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

case "$action" in
up)
    chmod 755 "$state"
    if ! runuser -u munge -- test -x "$state"; then
        echo "error: the munge user cannot reach $state (a parent directory is private); use a directory under /tmp or /var" >&2
        exit 1
    fi
    mkdir -p "$state"/{spool,state,log,munge}
    chown munge:munge "$state/munge"
    chmod 700 "$state/munge"
    if [ ! -f "$state/munge/munge.key" ]; then
        dd if=/dev/urandom bs=1 count=1024 of="$state/munge/munge.key" status=none
        chown munge:munge "$state/munge/munge.key"
        chmod 400 "$state/munge/munge.key"
    fi
    memory_mb=${MEMORY_MB:-$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))}
    cat >"$conf" <<CONF
ClusterName=lambdahat
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/munge
AuthInfo=socket=$state/munge/munge.socket
StateSaveLocation=$state/state
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=${CPUS:-8} RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    runuser -u munge -- /usr/sbin/munged --key-file="$state/munge/munge.key" \
        --socket="$state/munge/munge.socket" --pid-file="$state/munge/munged.pid" \
        --log-file="$state/munge/munged.log" --seed-file="$state/munge/munged.seed" --force
    cp "$state/munge/munged.pid" "$state/munged.pid"
    SLURM_CONF="$conf" /usr/sbin/slurmctld -f "$conf"
    SLURM_CONF="$conf" /usr/sbin/slurmd -f "$conf"
    for _ in $(seq 1 60); do
        if SLURM_CONF="$conf" sinfo -h -o %T 2>/dev/null | grep -q idle; then
            echo "export SLURM_CONF=$conf"
            exit 0
        fi
        sleep 0.5
    done
    echo "error: the SLURM node did not become idle within 30 s; logs in $state/log" >&2
    exit 1
    ;;
down)
    SLURM_CONF="$conf" scancel --user=root 2>/dev/null || true
    stop_pidfile "$state/slurmd.pid"
    stop_pidfile "$state/slurmctld.pid"
    stop_pidfile "$state/munged.pid"
    ;;
*)
    echo "usage: slurm-local.sh up|down [STATE_DIR]" >&2
    exit 2
    ;;
esac
