#!/bin/sh
# tests/slurm/run.sh CMD [ARG...]
#
# Inside the VM suite's guest (tests/vm/run.sh 6.12 tests/slurm/run.sh CMD):
# starts a real single-node SLURM from Debian's packages -- munged, MariaDB,
# slurmdbd, slurmctld and slurmd with proctrack/cgroup, task/cgroup and
# CgroupPlugin=cgroup/v2 (IgnoreSystemd=yes: the guest has no systemd, so
# slurmd makes its cgroups itself, under /system.slice/slurmstepd.scope) --
# waits until the accounting database knows the cluster, the account
# "ceemsnet" and root's association with it (root's default account), slurmctld's
# association cache has it (AccountingStorageEnforce=associations, as sites run
# it: jobs name no account) and the node is idle, then runs CMD as root in the
# checkout with SLURM_CONF set (sbatch, srun, salloc, sacct, ... answer; ceemsnet
# is not started), stops every daemon it started and exits with CMD's status.
#
# EpilogSlurmctld is the packaged packaging/slurm/ceemsnet-record-epilog.sh; its
# settings are in the guest's /etc/default/ceemsnet-record (a copy of /etc/default
# mounted over it in the guest alone), named to CMD by CEEMSNET_SLURM_RECORD_DEFAULTS;
# it writes nothing until a test adds CEEMSNET_PROMETHEUS there.
#
# All state (configuration, munge key, MariaDB data, spool, logs) lives in
# one private directory under the guest's /run (a tmpfs: nothing reaches the
# host, whose file system the guest shares) and is removed at the end. CMD
# finds it in CEEMSNET_SLURM_DIR; `tests/slurm/run.sh --restart-slurmd`
# (from CMD, with that variable set) restarts slurmd while jobs run.
# Progress goes to stderr; CEEMSNET_SLURM_TRACE=1 traces every command.
#
# It refuses to run outside such a guest: slurmd would move this machine's
# processes between cgroups.
set -eu
# CEEMSNET_SLURM_TRACE=1: every command on stderr (sh -x), to see where a start-up hangs
[ -z "${CEEMSNET_SLURM_TRACE:-}" ] || set -x
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
me=tests/slurm/run.sh
cluster=ceemsnet
account=ceemsnet

die() { echo "$me: $*" >&2; exit 1; }
t0=$(date +%s)
# progress on stderr, with the seconds since the start
say() { echo "$me: $* ($(($(date +%s) - t0)) s)" >&2; }

# tail of a daemon's log, folded into the one error line
logtail() { [ -f "$1" ] && tail -n 5 "$1" | tr '\n' '|' | sed 's/|$//'; }

# wait_for SECONDS WHAT LOG TEST...: poll TEST about once a second, for at most SECONDS
# (by the clock: a client such as sacctmgr may itself take half a minute to give up)
wait_for() {
    secs=$1 what=$2 log=$3
    shift 3
    end=$(($(date +%s) + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$end" ] || die "$what did not come up in ${secs}s; last lines of $log: $(logtail "$log")"
        sleep 1
    done
}

# running PID: the process exists and is not a zombie. The daemons fork away from this
# script, so their parent is the guest's PID 1, virtme-ng-init, which does not reap
# orphans: a daemon that has exited stays a zombie, and kill -0 still succeeds on it
running() {
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || state=
    [ -n "$state" ] && [ "$state" != Z ]
}
pid_alive() { [ -s "$1" ] && running "$(cat "$1")"; }

# stop PIDFILE NAME [SECONDS]: TERM, wait up to SECONDS (30), then KILL
stop() {
    [ -s "$1" ] || return 0
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || return 0
    n=0
    while running "$pid"; do
        n=$((n + 1))
        if [ $n -ge $((${3:-30} * 2)) ]; then
            echo "$me: $2 (pid $pid) did not stop in ${3:-30} s, killing it" >&2
            kill -9 "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.5
    done
    rm -f "$1"
}

node_idle() { [ "$(sinfo -h -n "$node" -o %T 2>/dev/null)" = idle ]; }
# slurmd registered: the node is up for slurmctld (idle, or running jobs: mixed, allocated);
# not responding shows as e.g. "idle*", unknown or down
node_up() { sinfo -h -n "$node" -o %T 2>/dev/null | grep -qxE 'idle|mixed|allocated|completing'; }

# start_slurmd READY: start slurmd and wait until READY (node_idle, node_up) holds
start_slurmd() {
    # slurmd makes its scope below system.slice, which systemd would have made
    mkdir -p /sys/fs/cgroup/system.slice
    "$S/bin/slurmd" -f "$SLURM_CONF" -d "$S/bin/slurmstepd" -L "$S/slurmd.log" >>"$S/slurmd.out" 2>&1 ||
        die "slurmd did not start: $(logtail "$S/slurmd.out") $(logtail "$S/slurmd.log")"
    wait_for 120 "slurmd (node $node $1 in sinfo)" "$S/slurmd.log" "$1"
}

# --restart-slurmd: from CMD, restart the running cluster's slurmd
if [ "${1:-}" = --restart-slurmd ]; then
    S=${CEEMSNET_SLURM_DIR:-}
    [ -n "$S" ] && [ -f "$S/slurm.conf" ] || die "--restart-slurmd: CEEMSNET_SLURM_DIR names no cluster (run it from CMD)"
    export SLURM_CONF="$S/slurm.conf"
    node=$(cat "$S/node")
    # jobs run on: the node comes back mixed or allocated, not idle
    stop "$S/slurmd.pid" slurmd
    start_slurmd node_up
    exit 0
fi

[ $# -ge 1 ] || { echo "usage: tests/vm/run.sh 6.12 $me CMD [ARG...]" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (run it inside tests/vm/run.sh)"
# the VM suite's guest: virtme-ng's kernel command line, and cgroup v2 at /sys/fs/cgroup
grep -q virtme /proc/cmdline && [ -f /sys/fs/cgroup/cgroup.controllers ] ||
    die "not inside the VM suite's guest (no virtme kernel command line or no cgroup v2 at /sys/fs/cgroup): run 'tests/vm/run.sh 6.12 $me CMD'; slurmd must never run on the host"
for p in munged mungekey mariadbd slurmdbd slurmctld-wlm slurmd-wlm slurmstepd-wlm sacctmgr sinfo; do
    command -v "$p" >/dev/null || die "$p is missing: run make setup (packaging/apt-packages.txt lists the SLURM suite's packages)"
done

S=$(mktemp -d /run/ceemsnet-slurm.XXXXXX)
extra_addr= etc_default=
export CEEMSNET_SLURM_DIR="$S"
export SLURM_CONF="$S/slurm.conf"
node=$(uname -n)
node=${node%%.*}
echo "$node" >"$S/node"
# SLURM's daemons know what they are by their program name (running_in_slurmctld()
# and the like: slurmctld-wlm would not open its slurmdbd agent and crashes); Debian
# names them through update-alternatives, so give them their names here
mkdir "$S/bin"
for d in slurmctld slurmd slurmstepd; do
    ln -s "$(command -v $d-wlm)" "$S/bin/$d"
done

cleanup() {
    trap - EXIT INT TERM
    [ -z "$etc_default" ] || umount /etc/default 2>/dev/null || true
    # jobs first, so that slurmd can still end their steps
    if pid_alive "$S/slurmctld.pid"; then
        scancel --quiet --full --user=root >/dev/null 2>&1 || true
    fi
    # all their state is thrown away: 10 s each to end, then KILL
    stop "$S/slurmd.pid" slurmd 10
    stop "$S/slurmctld.pid" slurmctld 10
    stop "$S/slurmdbd.pid" slurmdbd 10
    stop "$S/mariadbd.pid" mariadbd 10
    stop "$S/munged.pid" munged 10
    ip addr del "$extra_addr" dev lo 2>/dev/null || true
    rm -rf "$S"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the guest has only loopback (no network), and getaddrinfo() with AI_ADDRCONFIG, which
# SLURM uses for its listening sockets, then finds no address at all ("Unable to resolve
# (null)"): give lo one non-loopback IPv4 address for the run (glibc counts it)
extra_addr=10.254.254.1/32
ip addr add "$extra_addr" dev lo || die "cannot add $extra_addr to lo"

# --- munge: its own key and socket ----------------------------------------
mungekey --create --keyfile="$S/munge.key" >/dev/null 2>&1 || die "mungekey could not create $S/munge.key"
chmod 600 "$S/munge.key"
# --force: root-owned key and state in a root-owned directory is what we want
munged --force --num-threads=10 --socket="$S/munge.sock" --key-file="$S/munge.key" --pid-file="$S/munged.pid" \
    --log-file="$S/munged.log" --seed-file="$S/munged.seed" >>"$S/munged.log" 2>&1 ||
    die "munged did not start: $(logtail "$S/munged.log")"
wait_for 30 munged "$S/munged.log" test -S "$S/munge.sock"
say "munged up"

# --- MariaDB: a private data directory, loopback TCP only, slurmdbd's own database user.
# The data directory gets the server's system tables first, as a package's install does
# (mariadb-install-db, whose my_print_defaults is in a client package the suite does not
# install: the same SQL, from the server package, through mariadbd --bootstrap). Without them
# there is no mysql.proc, so slurmdbd's stored procedures (get_parent_limits) do not exist,
# every association query stops at the first account below root, and slurmctld never sees a
# user's association or default account (docs/testing.md, "The SLURM suite").
mkdir "$S/db"
dbopts="--no-defaults --user=root --datadir=$S/db --skip-name-resolve --innodb-flush-method=fsync \
--innodb-use-native-aio=0 --innodb-log-file-size=8M --innodb-buffer-pool-size=32M"
{
    echo "create database if not exists mysql;"
    echo "use mysql;"
    echo "SET @auth_root_socket='root';"
    cat /usr/share/mysql/mysql_system_tables.sql /usr/share/mysql/mysql_system_tables_data.sql
} | mariadbd $dbopts --bootstrap --log-warnings=0 --enforce-storage-engine= >"$S/mariadb-bootstrap.log" 2>&1 ||
    die "mariadbd --bootstrap could not make the system tables: $(logtail "$S/mariadb-bootstrap.log")"
# slurmdbd's user, as SLURM's accounting guide makes it (a password, the accounting database only)
dbpass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' \
    "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$dbpass';" \
    "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" >"$S/db-init.sql"
mariadbd $dbopts --socket="$S/mariadbd.sock" --pid-file="$S/mariadbd.pid" --log-error="$S/mariadbd.log" \
    --bind-address=127.0.0.1 --port=3306 --init-file="$S/db-init.sql" >/dev/null 2>&1 &
wait_for 180 mariadbd "$S/mariadbd.log" grep -q 'ready for connections' "$S/mariadbd.log"
say "mariadbd up"

# --- SLURM's configuration ------------------------------------------------
# the node as slurmd sees it (CPUs, sockets, memory), at the guest's loopback address
nodeline=$(slurmd-wlm -C 2>/dev/null | sed -n 's/^\(NodeName=.*\)/\1/p' | sed 's/ *UpTime=.*//')
[ -n "$nodeline" ] || die "slurmd -C printed no node line"
printf '%s\n' \
    "ClusterName=$cluster" \
    "SlurmctldHost=$node(127.0.0.1)" \
    "SlurmUser=root" \
    "SlurmdUser=root" \
    "AuthType=auth/munge" \
    "AuthInfo=socket=$S/munge.sock" \
    "CredType=cred/munge" \
    "StateSaveLocation=$S/ctld" \
    "SlurmdSpoolDir=$S/spool" \
    "SlurmctldPidFile=$S/slurmctld.pid" \
    "SlurmdPidFile=$S/slurmd.pid" \
    "SlurmctldLogFile=$S/slurmctld.log" \
    "SlurmdLogFile=$S/slurmd.log" \
    "SlurmctldDebug=info" \
    "SlurmdDebug=info" \
    "ProctrackType=proctrack/cgroup" \
    "TaskPlugin=task/cgroup" \
    "JobAcctGatherType=jobacct_gather/none" \
    "# step_extern in every job" \
    "PrologFlags=Contain" \
    "# salloc without a command runs its shell as step_interactive; no --pty, so" \
    "# that a test can feed it commands on stdin" \
    "LaunchParameters=use_interactive_step" \
    "InteractiveStepOptions=\"--interactive --preserve-env /bin/sh\"" \
    "AccountingStorageType=accounting_storage/slurmdbd" \
    "# as sites run it: a job needs an association (root's default account ceemsnet here)" \
    "AccountingStorageEnforce=associations" \
    "AccountingStorageHost=127.0.0.1" \
    "# for slurmdbd connections, auth/munge takes its socket from here, not AuthInfo" \
    "AccountingStoragePass=$S/munge.sock" \
    "AccountingStoragePort=6819" \
    "JobCompType=jobcomp/none" \
    "# ceemsnet's record of each job, as packaging/slurm/slurm.conf.example sets it up; the" \
    "# wrapper reads /etc/default/ceemsnet-record (below) and does nothing until it names a" \
    "# Prometheus server (tests/slurm/test_slurm.py's record tests start one)" \
    "EpilogSlurmctld=$repo/packaging/slurm/ceemsnet-record-epilog.sh" \
    "MpiDefault=none" \
    "SchedulerType=sched/backfill" \
    "SelectType=select/cons_tres" \
    "SelectTypeParameters=CR_Core" \
    "ReturnToService=2" \
    "SlurmdTimeout=300" \
    "MinJobAge=300" \
    "$nodeline NodeAddr=127.0.0.1 State=UNKNOWN" \
    "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" \
    >"$S/slurm.conf"
printf '%s\n' \
    "CgroupPlugin=cgroup/v2" \
    "# no systemd in the guest: slurmd makes its scope and the jobs' cgroups itself" \
    "IgnoreSystemd=yes" \
    "CgroupAutomount=yes" \
    "ConstrainCores=no" \
    "ConstrainRAMSpace=no" \
    "ConstrainDevices=no" \
    >"$S/cgroup.conf"
# slurmdbd reads slurmdbd.conf beside SLURM_CONF; it must be private to SlurmUser
printf '%s\n' \
    "AuthType=auth/munge" \
    "AuthInfo=socket=$S/munge.sock" \
    "DbdHost=localhost" \
    "DbdAddr=127.0.0.1" \
    "DbdPort=6819" \
    "SlurmUser=root" \
    "StorageType=accounting_storage/mysql" \
    "StorageHost=127.0.0.1" \
    "StoragePort=3306" \
    "StorageUser=slurm" \
    "StoragePass=$dbpass" \
    "StorageLoc=slurm_acct_db" \
    "PidFile=$S/slurmdbd.pid" \
    "LogFile=$S/slurmdbd.log" \
    "DebugLevel=info" \
    >"$S/slurmdbd.conf"
chmod 600 "$S/slurmdbd.conf"
mkdir "$S/ctld" "$S/spool"

# --- the record epilog's settings, where the packaged wrapper reads them: slurmctld runs its
# EpilogSlurmctld with SLURM_* variables alone (no PATH, no SLURM_CONF, nothing of its own
# environment), so /etc/default/ceemsnet-record it is. The guest's /etc is the host's, read-only:
# a copy of /etc/default is mounted over it in the guest alone, for the run.
mkdir "$S/etc-default"
cp -a /etc/default/. "$S/etc-default/"
mount --bind "$S/etc-default" /etc/default || die "cannot mount $S/etc-default on /etc/default in the guest"
etc_default=1
# ceemsnet from this checkout (python -m in the checkout: .venv's own entry point may be
# another checkout's editable install)
printf '%s\n' '#!/bin/sh' "cd '$repo' && exec '$repo/.venv/bin/python' -m ceemsnet.cli \"\$@\"" >"$S/bin/ceemsnet"
chmod 755 "$S/bin/ceemsnet"
printf '%s\n' \
    "# tests/slurm/run.sh: this guest's cluster (packaging/slurm/ceemsnet-record-epilog.sh reads it)" \
    "CEEMSNET=$S/bin/ceemsnet" \
    "CEEMSNET_RECORD_LOG=$S/record.log" \
    "# sacct and sacctmgr find this cluster by its slurm.conf, which is not /etc/slurm/slurm.conf" \
    "SLURM_CONF=$SLURM_CONF" \
    "export SLURM_CONF" \
    >/etc/default/ceemsnet-record
# the record tests add CEEMSNET_PROMETHEUS (and CEEMSNET_RECORD_ARGS) here once their Prometheus runs
export CEEMSNET_SLURM_RECORD_DEFAULTS=/etc/default/ceemsnet-record

# --- slurmdbd, then the cluster, account and association, then the daemons
slurmdbd >>"$S/slurmdbd.out" 2>&1 || die "slurmdbd did not start: $(logtail "$S/slurmdbd.out") $(logtail "$S/slurmdbd.log")"
wait_for 120 "slurmdbd (sacctmgr answering)" "$S/slurmdbd.log" sacctmgr -n list cluster
sacctmgr -i add cluster "$cluster" >/dev/null || die "sacctmgr could not add cluster $cluster"
sacctmgr -i add account "$account" cluster="$cluster" description="ceemsnet tests" organization=ceemsnet >/dev/null ||
    die "sacctmgr could not add account $account"
sacctmgr -i add user root account="$account" cluster="$cluster" >/dev/null || die "sacctmgr could not add root to $account"
sacctmgr -i modify user where name=root cluster="$cluster" set defaultaccount="$account" >/dev/null ||
    die "sacctmgr could not make $account root's default account"
# the whole list, as slurmctld asks for it (with user=root, sacctmgr showed root's association
# even while the unfiltered list, slurmctld's, stopped short of it)
sacctmgr -n -P list association cluster="$cluster" format=account,user | grep -qx "$account|root" ||
    die "sacctmgr's association list of $cluster has no association of root with $account: $(sacctmgr -n -P list association cluster="$cluster" format=account,user 2>&1 | tr '\n' ' ')"
say "slurmdbd up: cluster $cluster, account $account with root"

"$S/bin/slurmctld" -f "$SLURM_CONF" >>"$S/slurmctld.out" 2>&1 ||
    die "slurmctld did not start: $(logtail "$S/slurmctld.out") $(logtail "$S/slurmctld.log")"
wait_for 120 "slurmctld (sinfo answering)" "$S/slurmctld.log" sinfo -h
# jobs are refused until slurmctld's association cache has root with its default account
assoc_loaded() { scontrol show assoc_mgr users=root flags=users 2>/dev/null | grep -q "DefAccount=$account "; }
wait_for 60 "root's default account $account in slurmctld's association cache (scontrol show assoc_mgr)" \
    "$S/slurmctld.log" assoc_loaded
say "slurmctld up"
start_slurmd node_idle
say "slurmd up: node $node idle; running $*"

cd "$repo"
set +e
"$@"
rc=$?
set -e
exit $rc
