#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for tests/slurm (`make test-slurm`) and for trying
# `hydra/launcher=slurm` without a real cluster.
#
#   scripts/slurm_cluster.sh start    install slurm-wlm + munge if missing (apt, as root), write a
#                                     slurm.conf for this host, start munged, slurmctld, slurmd and
#                                     wait until the node is idle; does nothing if already up
#   scripts/slurm_cluster.sh stop     stop the daemons this script started (by their pid files)
#   scripts/slurm_cluster.sh status   the daemons and `sinfo`; exit status 0 when up, 1 otherwise
#
# Exit status of start: 0 up, 2 failed (not root, a daemon did not come up), 3 the packages are
# missing and apt-get cannot install them.
#
# Everything of the cluster lives under $ROBUSTLAB_SLURM_DIR (default /var/tmp/robustlab-slurm):
# etc/slurm.conf, state/ (slurmctld), spool/ (slurmd), log/, run/ (pid files), munge/. The clients
# (sbatch, squeue, scontrol, submitit) find the config through /etc/slurm/slurm.conf, a symlink to
# etc/slurm.conf made when no other config is there (otherwise: export SLURM_CONF=<dir>/etc/slurm.conf).
# The partition is $ROBUSTLAB_SLURM_PARTITION (default debug): no time limit of its own, any
# shorter one (e.g. --time=1) allowed. No accounting (sacct is unavailable), jobs may be requeued.
# Measured on a 2-core Debian 12 VM (bookworm, Slurm 22.05): install 7-9 s from a near mirror (first
# time only), start ~1 s, stop ~5 s.
set -euo pipefail

DIR=${ROBUSTLAB_SLURM_DIR:-/var/tmp/robustlab-slurm}
PARTITION=${ROBUSTLAB_SLURM_PARTITION:-debug}
CONF=$DIR/etc/slurm.conf
SYSTEM_CONF=/etc/slurm/slurm.conf
RUN=$DIR/run
HOST=$(hostname -s)
export SLURM_CONF=$CONF

say() { echo "slurm_cluster: $*"; }
die() {
    echo "slurm_cluster: $*" >&2
    exit 2
}

# pid of a daemon this script started, if it is still running as that program
own_pid() {
    local file=$RUN/$1.pid pid
    [[ -s $file ]] || return 1
    pid=$(tr -dc 0-9 <"$file")
    [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == "$1" ]] || return 1
    echo "$pid"
}

munge_works() { command -v munge >/dev/null && munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

node_state() { sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true; }

is_up() {
    own_pid slurmctld >/dev/null && own_pid slurmd >/dev/null && munge_works &&
        [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null &&
        command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    if ! command -v apt-get >/dev/null; then
        echo "slurm_cluster: slurm-wlm and munge are missing and apt-get is not available" >&2
        exit 3
    fi
    local t0=$SECONDS
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get update -qq || ! apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; then
        echo "slurm_cluster: apt-get could not install slurm-wlm and munge" >&2
        exit 3
    fi
    say "installed in $((SECONDS - t0)) s"
}

start_munge() {
    local key=/etc/munge/munge.key
    install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge "$DIR/munge"
    install -d -o munge -g munge -m 0755 /run/munge
    if [[ ! -s $key ]]; then
        say "creating the munge key $key"
        (umask 077 && dd if=/dev/urandom of=$key bs=1024 count=1 status=none)
        chown munge:munge $key
        chmod 0400 $key
    fi
    if munge_works; then
        return # a munged is running (ours from an earlier start, or the system's): use it
    fi
    runuser -u munge -- munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log"
    cp "$DIR/munge/munged.pid" "$RUN/munged.pid"
    for _ in $(seq 50); do
        munge_works && return
        sleep 0.1
    done
    die "munged did not come up (see $DIR/munge/munged.log)"
}

write_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    # 95% of the memory, so that slurmd never finds less than configured (which drains the node)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)
    cat >"$CONF" <<EOF
# Written by scripts/slurm_cluster.sh: a single-node cluster on $HOST.
ClusterName=robustlab
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# requeued jobs may start again after cred_expire seconds (default 120)
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
KillWait=10
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=120
SlurmdTimeout=300
NodeName=$HOST CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

link_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        return
    fi
    if [[ -e $SYSTEM_CONF || -L $SYSTEM_CONF ]]; then
        say "$SYSTEM_CONF is not ours: clients need: export SLURM_CONF=$CONF"
        return
    fi
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
}

start() {
    [[ $(id -u) == 0 ]] || die "start needs root (it installs packages and runs munged as munge)"
    local t0=$SECONDS
    install_packages
    if is_up; then
        say "already up: partition $PARTITION on $HOST ($CONF)"
        return
    fi
    mkdir -p "$DIR/etc" "$DIR/state" "$DIR/spool" "$DIR/log" "$RUN"
    start_munge
    if ! own_pid slurmctld >/dev/null && ! own_pid slurmd >/dev/null; then
        write_conf # only while none of our daemons runs with the old one
    fi
    link_conf
    own_pid slurmctld >/dev/null || slurmctld
    own_pid slurmd >/dev/null || slurmd
    local state=""
    for _ in $(seq 120); do
        state=$(node_state)
        [[ $state == idle* ]] && break
        if [[ $state =~ ^(down|drain) ]]; then
            scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
        fi
        sleep 0.5
    done
    if [[ $state != idle* ]]; then
        tail -5 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
        die "the node $HOST is '${state:-not known}', not idle, after 60 s (logs in $DIR/log)"
    fi
    say "up in $((SECONDS - t0)) s: partition $PARTITION on $HOST, $(nproc) CPUs ($CONF)"
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        if pid=$(own_pid $name); then
            kill "$pid"
            for _ in $(seq 100); do
                [[ -d /proc/$pid ]] || break
                sleep 0.1
            done
            if [[ -d /proc/$pid ]]; then
                kill -9 "$pid" 2>/dev/null || true
            fi
            say "stopped $name ($pid)"
        fi
        rm -f "$RUN/$name.pid"
    done
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

status() {
    local name pid
    for name in munged slurmctld slurmd; do
        if pid=$(own_pid $name); then
            say "$name running ($pid)"
        else
            say "$name not started by this script"
        fi
    done
    if is_up; then
        sinfo
        return 0
    fi
    say "not up"
    return 1
}

case ${1:-} in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
