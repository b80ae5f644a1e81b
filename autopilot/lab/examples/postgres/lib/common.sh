# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# Settings read from the environment, and the helpers every verb uses: PostgreSQL's programs
# run as their user, the hook log, one query on this node or another, and how a node
# reaches a primary (conninfo).

PORT=${PG_PORT:-5432}
DIR=${PG_DIR:-/var/lib/postgresql/autopilot}
PGDATA=$DIR/pgdata
HOME_DIR=${PG_HOME:-$(cd "$(dirname "$0")" && pwd)}
BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
JOB=${PG_JOB:-postgres}
SERVICE=${PG_SERVICE:-$JOB}
LOCK_KEY=${PG_LOCK_KEY:-service/$SERVICE/leader}
INIT_KEY=service/$SERVICE/initialize
SYNC_KEY=service/$SERVICE/sync
PY=${PG_PYTHON:-python3}
CURL=${PG_CURL:-curl}  # (the catalog without a python3 start, where there is one)
NL='
'
SYNC=${PG_SYNC:-0}
FENCED_NAME=autopilot_fenced
# a new primary's synchronous_standby_names while no other member is proven to be on its
# history: a standby nobody has, so that commits wait (strict) until the sync job proves one
UNPROVEN_NAME=autopilot_unproven
export PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-postgres} PGCONNECT_TIMEOUT=2
# this node's name: its application_name and replication slot (the hostname, "-" and "."
# -> "_"), by the shell itself: every hook starts with it, and a tr process (and hostname's)
# was about a quarter of a hook's start
NAME=${PG_NAME:-}
if [ -z "$NAME" ]; then read -r NAME 2>/dev/null </proc/sys/kernel/hostname; fi
if [ -z "$NAME" ]; then NAME=$(hostname); fi
while :; do
    case "$NAME" in
    *[-.]*) NAME_HEAD=${NAME%%[-.]*}; NAME="${NAME_HEAD}_${NAME#"$NAME_HEAD"?}" ;;
    *) break ;;
    esac
done
MY_IP=${AUTOPILOT_POSTGRES_IP:-${PG_ADVERTISE_IP:-}}

RUN_AS=${PG_RUN_AS:-postgres}
as_pg() {  # PostgreSQL refuses root: its programs run as $RUN_AS when we are root
    # without PGPASSWORD: they read the passfile named in their conninfo (pg_basebackup -R
    # would otherwise write the password into the clone's postgresql.auto.conf)
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups -- env -u PGPASSWORD "$@"
    else
        env -u PGPASSWORD "$@"
    fi
}

log() {
    # the file first: stderr is a pipe to the supervisor, gone when it was SIGKILLed
    msg="$(date +%s.%N) ${AUTOPILOT_ROLE:-none} $*"
    if [ -n "${PG_HOOK_LOG:-}" ]; then echo "$msg" >>"$PG_HOOK_LOG"; fi
    echo "pg-hook: $msg" >&2
}

trace() {  # a step's time in the hook log only (where a failover's time goes)
    if [ -n "${PG_HOOK_LOG:-}" ]; then echo "$(date +%s.%N) ${AUTOPILOT_ROLE:-none} trace $*" >>"$PG_HOOK_LOG"; fi
}

psql_local() {  # psql_local [PSQL-ARGS]: psql on the local server, unaligned, tuples only,
    # stopping at the first error (SQL from -c or stdin)
    "$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 "$@"
}
q() { psql_local -c "$1" 2>&1; }  # q SQL: one query on the local server
qr() {  # qr HOST PORT SQL: the same on another node
    PGCONNECT_TIMEOUT=${PG_REMOTE_TIMEOUT:-1} "$BIN/psql" -X -Atq -h "$1" -p "$2" \
        -v ON_ERROR_STOP=1 -c "$3" 2>&1
}


up() { [ "$(q 'select 1' 2>/dev/null)" = 1 ]; }
in_recovery() { q 'select pg_is_in_recovery()'; }  # t, f, or an error

wait_up() {  # wait_up SECONDS: until the server answers
    i=0
    while ! up; do
        i=$((i + 1))
        [ $i -ge $(($1 * 10)) ] && return 1
        sleep 0.1
    done
}

alive() { kill -0 "$1" 2>/dev/null; }
my_ppid() { set -- $(cat /proc/$$/stat 2>/dev/null); echo "${4:-0}"; }

PASSFILE="$DIR/pgpass"
conninfo() {  # conninfo HOST PORT [NAME]: how node NAME (default: this one) reaches a primary
    ci="host=$1 port=$2 user=$PGUSER application_name=${3:-$NAME} connect_timeout=2"
    ci="$ci keepalives_idle=2 keepalives_interval=1 keepalives_count=2"
    # the password from a passfile (write_passfile), not in primary_conninfo: it stays out
    # of postgresql.auto.conf, which pg_basebackup -R and pg_rewind copy from node to node
    if [ -n "${PGPASSWORD:-}" ]; then ci="$ci passfile=$PASSFILE"; fi
    echo "$ci"
}
