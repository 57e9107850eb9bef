#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, to try (and test, in CI) the workflow's SLURM path
# without a real cluster. Debian/Ubuntu, as root. Usage:
#   profiles/slurm/local-cluster.sh start    # install munge + Slurm where missing, configure, start, wait for idle
#   profiles/slurm/local-cluster.sh status   # daemons and node state; exit 1 unless the cluster is up
#   profiles/slurm/local-cluster.sh stop     # cancel its jobs, stop the daemons it started (by pid file)
# One node named `hostname -s` with the CPUs and memory `slurmd -C` reports, one default partition
# `local`, no accounting database (run the workflow with profiles/slurm/no-accounting, see README.md).
# Both start and stop are idempotent. State, logs and pid files: /var/lib/flatmin-slurm.
set -euo pipefail

readonly DIR=/var/lib/flatmin-slurm
readonly CONF=/etc/slurm/slurm.conf
readonly MARK="# Written by flatmin profiles/slurm/local-cluster.sh"
readonly PACKAGES=(munge slurmctld slurmd slurm-client)
readonly PARTITION=local
# Finished jobs stay visible to squeue / scontrol for this long (there is no accounting database to ask
# instead): the SLURM plugin's squeue status checks need at least 3 x its
# --slurm-init-seconds-before-status-checks, and the tests read each job's resources after the run.
readonly MIN_JOB_AGE=3600
readonly START_TIMEOUT=60 # seconds to wait for the node to become idle

die() {
    echo "local-cluster.sh: $*" >&2
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 must run as root (it installs packages and starts and stops system daemons)"
}

# The pid file of daemon $1. munged runs as user munge, so its pid file lives in munge's own folder.
pid_file() {
    if [ "$1" = munged ]; then echo /run/munge/flatmin-munged.pid; else echo "$DIR/$1.pid"; fi
}

# The pid in pid file $1 if that process is alive and is command $2 (guards against a reused pid).
live_pid() {
    local pid
    [ -r "$1" ] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] && echo "$pid"
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return
    command -v apt-get >/dev/null ||
        die "missing ${missing[*]} and no apt-get: install munge and Slurm (controller, node daemon, client tools) yourself"
    echo "local-cluster.sh: installing ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
}

write_config() {
    local host node
    if [ -e "$CONF" ] && ! grep -qxF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; it manages only its own test cluster (move that file away first)"
    fi
    host="$(hostname -s)"
    # `slurmd -C` prints this machine's node line (NodeName=... CPUs=... RealMemory=...) and then UpTime.
    node="$(slurmd -C | grep '^NodeName=')" || die "slurmd -C did not describe this machine"
    mkdir -p "$DIR/state" "$DIR/spool" "$(dirname "$CONF")"
    cat >"$CONF.tmp" <<EOF
$MARK
# A one-node test cluster; \`local-cluster.sh stop\` stops it.
ClusterName=flatmin
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
# No cgroups, systemd or accounting database: processes tracked by parent pid, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
# Cores and memory are consumable: jobs run side by side as far as their --cpus-per-task and --mem allow.
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MinJobAge=$MIN_JOB_AGE
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    if live_pid "$(pid_file munged)" munged >/dev/null; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- munged --pid-file="$(pid_file munged)" ||
        die "munged did not start (see /var/log/munge/munged.log)"
}

# Start daemon $1 (with the remaining arguments) unless its pid file names a live one.
start_daemon() {
    local name="$1"
    shift
    live_pid "$(pid_file "$name")" "$name" >/dev/null && return
    "$@" || die "$name did not start; its log, $DIR/$name.log, ends with:
$(tail -n 20 "$DIR/$name.log" 2>/dev/null)"
}

node_state() {
    sinfo --noheader --Node --format=%T 2>/dev/null | head -n 1
}

start() {
    need_root start
    install_packages
    write_config
    start_munge
    start_daemon slurmctld slurmctld -c # -c: forget jobs and node states of an earlier run
    start_daemon slurmd slurmd
    local waited=0 state
    while state="$(node_state)"; [ "$state" != idle ] && [ "$state" != mixed ] && [ "$state" != allocated ]; do
        if [ "$waited" -ge "$START_TIMEOUT" ]; then
            die "node $(hostname -s) not idle after ${START_TIMEOUT} s (state: '${state:-no answer}'); $(sinfo -R 2>&1)
slurmctld log: $(tail -n 10 "$DIR/slurmctld.log" 2>/dev/null)
slurmd log: $(tail -n 10 "$DIR/slurmd.log" 2>/dev/null)"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "local-cluster.sh: up; $(sinfo --noheader --Node --format='node %N: %T, %c CPUs, %m MB, partition %P')"
}

stop() {
    local name pid file waited
    need_root stop
    # Jobs would outlive slurmd (their slurmstepd keeps running): cancel them while slurmctld answers.
    if live_pid "$(pid_file slurmctld)" slurmctld >/dev/null; then
        scancel --quiet --partition="$PARTITION" 2>/dev/null || true
    fi
    for name in slurmd slurmctld munged; do
        file="$(pid_file "$name")"
        if pid="$(live_pid "$file" "$name")"; then
            kill "$pid"
            for ((waited = 0; waited < 20; waited++)); do
                [ -d "/proc/$pid" ] || break
                sleep 0.5
            done
            [ -d "/proc/$pid" ] && kill -KILL "$pid"
            echo "local-cluster.sh: stopped $name (pid $pid)"
        fi
        rm -f "$file"
    done
}

status() {
    local name pid up=0
    for name in munged slurmctld slurmd; do
        if pid="$(live_pid "$(pid_file "$name")" "$name")"; then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            up=1
        fi
    done
    [ "$up" -eq 0 ] || return 1
    sinfo --noheader --Node --format='node %N: %T, %c CPUs, %m MB, partition %P'
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 start|stop|status" ;;
esac
