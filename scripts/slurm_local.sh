#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the test suite and for trying the SLURM path of
# ired-train on a workstation. Run as root:
#
#   scripts/slurm_local.sh start     # munged, slurmctld, slurmd; returns once the node is idle
#   scripts/slurm_local.sh status    # what runs, and sinfo
#   scripts/slurm_local.sh stop      # stops the daemons this script started
#
# Then, e.g.:  ired-train -m experiment=[pilot,mining_sweep] hardware=slurm_cpu
#
# The cluster has partitions `gpu` (the default) and `cpu` on one node, this machine, with its
# CPUs and memory and no GPU. No accounting daemon: submitit warns that sacct failed and falls
# back to squeue, which is fine. Process tracking and task binding are the plain ones
# (linuxproc, none), so it also runs in containers without cgroups.
#
# Environment: IRED_SLURM_DIR (state, spool and logs; default /var/lib/ired-slurm).
# Writes /etc/slurm/slurm.conf, the place every SLURM command reads by default, and refuses to
# replace one it did not write.
set -euo pipefail

BASE=${IRED_SLURM_DIR:-/var/lib/ired-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# Written by ired-mining scripts/slurm_local.sh"
MUNGE_SOCKET=/run/munge/munge.socket.2
HOST=$(hostname -s)

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

running() {  # pid file -> true if its process lives
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

ensure_packages() {
    if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
        say "installing slurm-wlm and munge (apt)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged already answers on the default socket
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        install -d -o munge -g munge -m 0700 /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    fi
    install -d -o munge -g munge -m 0755 /run/munge
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    # munged refuses to run as root; it runs as its own user, as a packaged service would.
    runuser -u munge -- munged
    touch "$BASE/munged.ours"  # so that stop ends only a munged this script started
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged did not answer on $MUNGE_SOCKET (see /var/log/munge/munged.log)"
}

write_conf() {
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF"; then
        die "$CONF exists and was not written by this script; not replacing a real cluster's config"
    fi
    # The node as slurmd itself sees it, so slurmd never finds it smaller than configured.
    local probe cpus mem
    probe=$(slurmd -C 2>/dev/null | head -1 || true)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$probe")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$probe")
    cpus=${cpus:-$(nproc)}
    mem=${mem:-$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 ))}
    install -d -m 0755 /etc/slurm
    cat >"$CONF.tmp" <<EOF
$MARK ($(date -u +%FT%TZ)); stop and start it again to rewrite.
# One node ($HOST: $cpus CPUs, $mem MB), partitions gpu (default) and cpu, no accounting.
ClusterName=ired-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/slurmd
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
# No cgroups: plain process tracking, no task binding (works inside containers).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# CPUs (not cores) are the unit a job gets: one job per CPU with cpus_per_task=1.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Known, so that --gpus-per-node=0 parses; the node has none.
GresTypes=gpu
# A restarted node comes back into service by itself.
ReturnToService=2
# Seconds between SIGTERM and SIGKILL when a job is cancelled or requeued.
KillWait=5
# Seconds a finished job stays visible to squeue/scontrol (submitit polls them).
MinJobAge=600
SlurmdTimeout=120
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=gpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

node_state() {
    sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1 || true
}

wait_for_node() {
    local state=""
    for _ in $(seq 120); do
        state=$(node_state)
        case $state in
            idle|mixed|allocated|completing) say "node $HOST is $state"; return ;;
            down*|drain*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    tail -n 20 "$BASE/log/slurmctld.log" "$BASE/log/slurmd.log" >&2 || true
    die "node $HOST did not become idle within 60 s (state: ${state:-no answer}); logs above"
}

start() {
    [[ $(id -u) == 0 ]] || die "start needs root (it writes $CONF and runs the daemons)"
    ensure_packages
    install -d -m 0755 "$BASE" "$BASE/ctld" "$BASE/slurmd" "$BASE/log"
    start_munge
    if ! running "$BASE/slurmctld.pid"; then
        write_conf
        # -i: a state file from an older cluster in $BASE must not stop a fresh start.
        slurmctld -i
    fi
    running "$BASE/slurmd.pid" || slurmd
    wait_for_node
}

stop() {
    local name pidfile
    for name in slurmd slurmctld; do
        pidfile=$BASE/$name.pid
        if running "$pidfile"; then
            kill "$(cat "$pidfile")"
            for _ in $(seq 50); do running "$pidfile" || break; sleep 0.1; done
            say "stopped $name"
        fi
        rm -f "$pidfile"
    done
    if [[ -e $BASE/munged.ours ]]; then
        munged --stop >/dev/null 2>&1 && say "stopped munged"
        rm -f "$BASE/munged.ours"
    fi
}

status() {
    local name
    for name in slurmctld slurmd; do
        if running "$BASE/$name.pid"; then say "$name running (pid $(cat "$BASE/$name.pid"))"
        else say "$name not running"; fi
    done
    if sinfo >/dev/null 2>&1; then
        sinfo
    else
        say "sinfo gets no answer"
        return 1
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
