#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_cluster.py.
#
#   tests/cluster/start_slurm.sh [start]   start it (idempotent: a running cluster is kept)
#   tests/cluster/start_slurm.sh stop      stop the daemons it started, remove its state
#   tests/cluster/start_slurm.sh status    exit 0 when the cluster answers
#   tests/cluster/start_slurm.sh install   apt-get install the packages (needs root)
#
# Everything lives under $SNN_ES_SLURM_STATE (default /tmp/snn-es-slurm): slurm.conf, the
# database, spool, logs, pid files and an `env` file to source (it sets SLURM_CONF); the one
# thing outside it is the link /etc/slurm/slurm.conf -> $STATE/etc/slurm.conf (made only
# where no slurm.conf exists, removed by `stop`). Every
# daemon is addressed as 127.0.0.1 (MariaDB and slurmdbd also listen on it only), on
# non-default ports, and munge on its own socket, so nothing leaves the machine and a
# system SLURM or munge is not disturbed.
# Node: this machine's CPUs and 90% of its memory, no GPUs (no gres), one partition
# `$PARTITION`.
# Accounting: slurmdbd on a private MariaDB, so `sacct` and `sacctmgr` work as on a real
# cluster (`sacct` is what Snakemake's SLURM plugin polls; without slurmdbd it only answers
# "Slurm accounting storage is disabled"). Account `$ACCOUNT` holds user root.
set -euo pipefail

STATE="${SNN_ES_SLURM_STATE:-/tmp/snn-es-slurm}"
PARTITION="${SNN_ES_SLURM_PARTITION:-debug}"
ACCOUNT="${SNN_ES_SLURM_ACCOUNT:-snnes}"
NODE="${SNN_ES_SLURM_NODE:-snnes1}"
CLUSTER=snnes
CTLD_PORT="${SNN_ES_SLURM_CTLD_PORT:-16817}"
SLURMD_PORT="${SNN_ES_SLURM_SLURMD_PORT:-16818}"
DBD_PORT="${SNN_ES_SLURM_DBD_PORT:-16819}"
DB_PORT="${SNN_ES_SLURM_DB_PORT:-16820}"
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
MUNGE_SOCKET="$STATE/run/munge.socket"
DB_SOCKET="$STATE/run/mysqld.sock"
export SLURM_CONF="$STATE/etc/slurm.conf"
# Snakemake's job step drops SLURM_* variables (SLURM_CONF too) before calling srun inside a
# job, so srun reads the default path: it links to our slurm.conf while the cluster runs.
SYSTEM_CONF="${SNN_ES_SLURM_SYSTEM_CONF:-/etc/slurm/slurm.conf}"

log() { echo "start_slurm: $*" >&2; }

have_packages() {
  local tool
  for tool in slurmctld slurmd slurmdbd sbatch sacct sacctmgr munged mariadbd \
    mariadb-install-db mariadb; do
    command -v "$tool" >/dev/null || return 1
  done
}

# Why the last `install` failed, for the tests' skip message (removed once it succeeds).
INSTALL_ERR="${SNN_ES_SLURM_INSTALL_ERR:-/tmp/snn-es-slurm-install.err}"

install_failed() {
  log "$*"
  echo "$*" >"$INSTALL_ERR"
  return 1
}

install_packages() {
  if have_packages; then rm -f "$INSTALL_ERR"; return 0; fi
  command -v apt-get >/dev/null || install_failed "apt-get not found: cannot install ${PACKAGES[*]}"
  [ "$(id -u)" = 0 ] || install_failed "installing ${PACKAGES[*]} needs root"
  export DEBIAN_FRONTEND=noninteractive
  local out
  if ! out=$( { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
    "${PACKAGES[@]}"; } 2>&1 ); then
    echo "$out" | tail -n 20 >&2
    install_failed "apt-get install ${PACKAGES[*]} failed: $(echo "$out" | grep -E '^(E|W):' | tail -n 1)"
  fi
  have_packages || install_failed "${PACKAGES[*]} installed, but a daemon or tool is missing"
  rm -f "$INSTALL_ERR"
}

# pid_alive PIDFILE NAME: the process the pid file names runs and is NAME (a stale pid file
# from a killed run may name an unrelated process by now; that one is never touched).
pid_alive() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null)
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, wait, then KILL the one process we started
  local file=$1 name=$2 pid
  if pid_alive "$file" "$name"; then
    pid=$(cat "$file" 2>/dev/null)
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do pid_alive "$file" "$name" || break; sleep 0.1; done
    if pid_alive "$file" "$name"; then
      log "$name ($pid) did not stop on TERM; killing it"
      kill -9 "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

wait_for() {  # wait_for SECONDS CMD...: poll until CMD succeeds
  local tries=$(( $1 * 5 )); shift
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

write_config() {
  local cpus mem_total_mb real_mb
  cpus=$(nproc)
  mem_total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
  real_mb=$(( mem_total_mb * 9 / 10 ))  # leave the rest to the OS and Snakemake itself
  mkdir -p "$STATE"/{etc,spool/ctld,spool/d,log,run,munge,db}
  cat >"$SLURM_CONF" <<EOF
# Written by tests/cluster/start_slurm.sh: a one-node test cluster on 127.0.0.1.
ClusterName=$CLUSTER
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: plain process tracking, no task containment.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SwitchType=switch/none
MpiDefault=none
# Several jobs share the node, each on its own cores and memory.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# With slurmdbd this names the munge socket the clients (sacct, sacctmgr) use for it.
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
# sacct shows each job's --comment: Snakemake puts the rule and wildcards there.
AccountingStoreFlags=job_comment
# Fast turnaround for tests.
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
MessageTimeout=10
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$(hostname) CPUs=$cpus RealMemory=$real_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$STATE/etc/slurmdbd.conf" <<EOF
# Written by tests/cluster/start_slurm.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$STATE/etc/slurmdbd.conf"
  echo "export SLURM_CONF=$SLURM_CONF" >"$STATE/env"
}

link_system_conf() {
  if [ -e "$SYSTEM_CONF" ] || [ -L "$SYSTEM_CONF" ]; then
    if [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then return 0; fi
    log "$SYSTEM_CONF exists and is not the test cluster's: refusing to replace it" \
      "(jobs' srun would read it; set SNN_ES_SLURM_SYSTEM_CONF if it lives elsewhere)"
    return 1
  fi
  mkdir -p "$(dirname "$SYSTEM_CONF")"
  ln -s "$SLURM_CONF" "$SYSTEM_CONF"
}

unlink_system_conf() {
  if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ]; then
    rm -f "$SYSTEM_CONF"
  fi
}

db() { mariadb --no-defaults --socket="$DB_SOCKET" -uroot "$@"; }

start_munge() {
  local key=/etc/munge/munge.key
  if [ ! -r "$key" ]; then  # no system key: one of our own
    key="$STATE/munge/munge.key"
    [ -f "$key" ] || mungekey --create --keyfile="$key"
  fi
  munged --force --socket="$MUNGE_SOCKET" --key-file="$key" \
    --pid-file="$STATE/run/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
  wait_for 10 test -S "$MUNGE_SOCKET" || { log "munged did not start"; return 1; }
}

start_database() {
  if [ ! -d "$STATE/db/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$STATE/db" --user=root --skip-test-db \
      --auth-root-authentication-method=normal >"$STATE/log/mariadb-install.log" 2>&1
  fi
  # root without a password, reachable on 127.0.0.1 only: slurmdbd's StorageUser.
  setsid mariadbd --no-defaults --datadir="$STATE/db" --user=root --socket="$DB_SOCKET" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$STATE/run/mariadbd.pid" \
    --log-error="$STATE/log/mariadb.log" --skip-log-bin --innodb-buffer-pool-size=32M \
    --skip-name-resolve </dev/null >/dev/null 2>&1 &
  wait_for 60 db -e 'select 1' || { log "MariaDB did not start; see $STATE/log/mariadb.log"; return 1; }
}

start_accounting() {
  slurmdbd  # reads slurmdbd.conf next to $SLURM_CONF
  wait_for 60 timeout 10 sacctmgr -n list cluster ||
    { log "slurmdbd does not answer; see $STATE/log/slurmdbd.log"; return 1; }
  # The cluster, an account and its user, as an admin would (each is a no-op the 2nd time).
  sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" Description=tests \
    Organization=tests >/dev/null 2>&1 || true
  sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null 2>&1 || true
  sacctmgr -n -P -s list user root format=account | grep -qx "$ACCOUNT" ||
    { log "could not register account $ACCOUNT"; return 1; }
}

cluster_up() {
  local name
  for name in munged mariadbd slurmdbd slurmctld slurmd; do
    pid_alive "$STATE/run/$name.pid" "$name" || return 1
  done
  [ "$(readlink "$SYSTEM_CONF")" = "$SLURM_CONF" ] || return 1
  sinfo -h -N -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'
}

start() {
  have_packages || { log "SLURM is not installed (run: $0 install)"; return 1; }
  if [ -f "$SLURM_CONF" ] && cluster_up; then
    log "already running (SLURM_CONF=$SLURM_CONF)"
    return 0
  fi
  stop_daemons  # whatever is left of an earlier start
  write_config
  link_system_conf
  start_munge
  start_database
  start_accounting
  slurmctld -f "$SLURM_CONF"
  slurmd -f "$SLURM_CONF" -N "$NODE"
  if wait_for 60 cluster_up; then
    log "up: partition $PARTITION, account $ACCOUNT, node $NODE ($(nproc) CPUs);" \
      "source $STATE/env"
    return 0
  fi
  log "the cluster did not come up; logs in $STATE/log"
  tail -n 20 "$STATE"/log/*.log >&2 || true
  return 1
}

stop_daemons() {
  stop_pid "$STATE/run/slurmd.pid" slurmd
  stop_pid "$STATE/run/slurmctld.pid" slurmctld
  stop_pid "$STATE/run/slurmdbd.pid" slurmdbd
  stop_pid "$STATE/run/mariadbd.pid" mariadbd
  stop_pid "$STATE/run/munged.pid" munged
}

stop() {
  if [ -f "$SLURM_CONF" ] && pid_alive "$STATE/run/slurmctld.pid" slurmctld; then
    scancel --full --quiet --partition="$PARTITION" 2>/dev/null || true
  fi
  stop_daemons
  unlink_system_conf
  case "$STATE" in
    / | "") ;;
    *) rm -rf "$STATE" ;;
  esac
  log "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) cluster_up ;;
  install) install_packages ;;
  *) echo "usage: $0 [start|stop|status|install]" >&2; exit 2 ;;
esac
