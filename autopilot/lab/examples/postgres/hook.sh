#!/bin/sh
# PostgreSQL 15 hooks for autopilot: one script, one verb per hook (docs/postgres.md).
#
#   run       the postgres job: bootstraps or clones the data directory, then runs the
#             postmaster, always started as a standby ("fenced": read-only until promoted)
#   health    the server answers and pg_is_in_recovery() agrees with the election
#   promote   election won: initdb (first node of a new cluster) or pg_promote()
#   demote    election lost: refuse commits at once, then restart as a standby
#   follow    the leader changed: re-point primary_conninfo and reload (pg_rewind first when
#             this node's history forked off the leader's; a re-clone if the rewind fails)
#   detach    the leader left: empty primary_conninfo and reload
#   identity  system identifier and postmaster start time (the data's incarnation)
#   position  how far this node's WAL goes, as an integer; exit 1 when not eligible
#   sync      (periodic, sync mode) the primary keeps synchronous_standby_names and the
#             published sync set in step with the replicas that stream
#   slots     (periodic) the primary drops the replication slots of members gone for
#             longer than PG_SLOT_GRACE
#
# Fencing: a node never starts as a primary. `run` always starts the postmaster with
# standby.signal; only `promote` ends recovery. `demote` first sets synchronous_standby_names
# to a standby that never exists (every commit from then on waits and is never acknowledged),
# then stops the server (clients get errors) and starts it again as a standby.
set -u
set -f  # no globbing: "*" is a value here (the sync set of a new primary)

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
SYNC=${PG_SYNC:-0}
FENCED_NAME=autopilot_fenced
export PGUSER=${PGUSER:-postgres} PGDATABASE=${PGDATABASE:-postgres} PGCONNECT_TIMEOUT=2
# this node's name: its application_name and replication slot (hostname, "-" -> "_")
NAME=$(echo "${PG_NAME:-$(hostname)}" | tr -- '-.' '__')
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

q() {  # q SQL: one query on the local server, unaligned, tuples only
    "$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 -c "$1" 2>&1
}
qr() {  # qr HOST PORT SQL: the same on another node
    PGCONNECT_TIMEOUT=${PG_REMOTE_TIMEOUT:-1} "$BIN/psql" -X -Atq -h "$1" -p "$2" \
        -v ON_ERROR_STOP=1 -c "$3" 2>&1
}
catalog() { timeout 5 "$PY" "$HOME_DIR/catalog.py" "$@"; }

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
conninfo() {  # conninfo HOST PORT: how this node reaches a primary
    ci="host=$1 port=$2 user=$PGUSER application_name=$NAME connect_timeout=2"
    ci="$ci keepalives_idle=2 keepalives_interval=1 keepalives_count=2"
    # the password from a passfile (write_passfile), not in primary_conninfo: it stays out
    # of postgresql.auto.conf, which pg_basebackup -R and pg_rewind copy from node to node
    if [ -n "${PGPASSWORD:-}" ]; then ci="$ci passfile=$PASSFILE"; fi
    echo "$ci"
}

write_passfile() {
    # for the server's walreceiver, pg_basebackup and pg_rewind (they run as $RUN_AS);
    # the hooks' own psql calls read PGPASSWORD. libpq ignores a passfile other users can
    # read; ":" and "\" in the password are escaped as its format wants
    [ -n "${PGPASSWORD:-}" ] || { rm -f "$PASSFILE"; return 0; }
    (umask 077 && printf '*:*:*:%s:%s\n' "$PGUSER" \
        "$(printf '%s' "$PGPASSWORD" | sed 's/[\\:]/\\&/g')" >"$PASSFILE.tmp")
    [ "$(id -u)" = 0 ] && chown "$RUN_AS:" "$PASSFILE.tmp"
    mv "$PASSFILE.tmp" "$PASSFILE"
}

write_hba() {
    # every node trusts the same sources; PG_AUTH_METHOD=scram-sha-256 with PGPASSWORD
    # set asks for the password instead (clients and replication alike, loopback too)
    method=${PG_AUTH_METHOD:-trust}
    cidr=${PG_HBA_CIDR:-0.0.0.0/0}
    printf 'local all all trust\nhost all all 127.0.0.1/32 %s\nhost all all %s %s\nhost replication all 127.0.0.1/32 %s\nhost replication all %s %s\n' \
        "$method" "$cidr" "$method" "$method" "$cidr" "$method" >"$DIR/pg_hba.conf"
}

# ---------------------------------------------------------------- state of the transitions
# The last transition a hook applied, "ROLE EPOCH" in $DIR/autopilot-role (ROLE: none,
# primary, replica). Hooks and checks started before a promotion still carry the old
# environment: every state-changing hook holds $DIR/hook.lock and compares epochs first.
STATE="$DIR/autopilot-role"
EPOCH=${AUTOPILOT_LEADER_EPOCH:-0}
case "$EPOCH" in '' | *[!0-9]*) EPOCH=0 ;; esac
state_role() { set -- $(cat "$STATE" 2>/dev/null); echo "${1:-none}"; }
state_epoch() { set -- $(cat "$STATE" 2>/dev/null); echo "${2:-0}"; }
set_state() { echo "$1 $2" >"$STATE.tmp" && mv "$STATE.tmp" "$STATE"; }

locked() {  # locked [-n] VERB: run `hook.sh VERB` holding the hook lock (-n: skip if busy)
    wait=-w${PG_LOCK_WAIT:-30}
    if [ "$1" = -n ]; then wait=-n; shift; fi
    mkdir -p "$DIR"
    flock $wait "$DIR/hook.lock" sh "$0" "$@"
}

leader_is_me() {
    [ -n "${AUTOPILOT_LEADER_ADDRESS:-}" ] && [ "${AUTOPILOT_LEADER_ADDRESS:-}" = "$MY_IP" ] &&
        [ "${AUTOPILOT_LEADER_PORT:-}" = "$PORT" ]
}

# ---------------------------------------------------------------- run
start_postmaster() {
    # always as a standby: only `promote` ends recovery
    as_pg touch "$PGDATA/standby.signal"
    chmod 700 "$PGDATA"
    set -- -D "$PGDATA" -c config_file="$HOME_DIR/postgresql.conf" \
        -c hba_file="$DIR/pg_hba.conf" -c port="$PORT" -c listen_addresses="${PG_LISTEN:-*}"
    # the most WAL a slot may hold back (postgresql.conf: 1GB): a slot past it is invalidated
    if [ -n "${PG_MAX_SLOT_WAL_KEEP_SIZE:-}" ]; then
        set -- "$@" -c max_slot_wal_keep_size="$PG_MAX_SLOT_WAL_KEEP_SIZE"
    fi
    # not through the as_pg function: $! must be the postmaster itself (setpriv execs it)
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --init-groups -- \
            env -u PGPASSWORD "$BIN/postgres" "$@" ${PG_EXTRA_ARGS:-} &
    else
        env -u PGPASSWORD "$BIN/postgres" "$@" ${PG_EXTRA_ARGS:-} &
    fi
    PM=$!
}

clone_from() {  # clone_from HOST PORT: pg_basebackup -R into $PGDATA with our slot
    rm -rf "$PGDATA.tmp"
    qr "$1" "$2" "select pg_drop_replication_slot(slot_name) from pg_replication_slots
                 where slot_name = '$NAME' and not active" >/dev/null
    if as_pg "$BIN/pg_basebackup" -d "$(conninfo "$1" "$2")" -D "$PGDATA.tmp" -X stream -R \
        -C -S "$NAME" -c fast --no-sync 2>"$DIR/basebackup.err"; then
        mv "$PGDATA.tmp" "$PGDATA"
        log "cloned from $1:$2 (pg_basebackup, slot $NAME)"
        return 0
    fi
    log "pg_basebackup from $1:$2 failed: $(tail -n 2 "$DIR/basebackup.err" | tr '\n' ' ')"
    rm -rf "$PGDATA.tmp"
    return 1
}

await_data() {
    # no data yet: the elected node of a new cluster runs initdb (in `promote`); every other
    # node clones from the primary of the moment as soon as one is promoted
    while [ ! -f "$PGDATA/PG_VERSION" ]; do
        [ "$(my_ppid)" = "$PARENT" ] && [ "$stopping" = 0 ] || exit 0
        set -- $(catalog cluster "$LOCK_KEY" "$INIT_KEY" 2>/dev/null)
        if [ "${1:-0}" = 1 ]; then
            : >"$DIR/cluster-exists"  # for the health check: no bootstrap candidate any more
            if [ "$4" = 1 ] && ! { [ "$2" = "$MY_IP" ] && [ "$3" = "$PORT" ]; }; then
                flock -w 60 "$DIR/hook.lock" true
                [ -f "$PGDATA/PG_VERSION" ] || clone_from "$2" "$3" || sleep 1
            fi
        fi
        sleep 0.5
    done
}

run() {
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    [ "$(id -u)" = 0 ] && chown "$RUN_AS:" "$DIR"
    write_hba
    write_passfile
    PARENT=$(my_ppid)
    # a supervisor SIGKILLed leaves our stdout/stderr pipes without a reader: a write must
    # fail, not kill the loop before it fences the postmaster it leaves behind
    trap '' PIPE
    PM=""
    if [ -f "$PGDATA/postmaster.pid" ]; then
        old=$(head -n 1 "$PGDATA/postmaster.pid")
        if alive "$old" && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q postgres; then
            PM=$old
            fence
            log "adopted postmaster $PM left by a previous supervisor (fenced)"
        fi
    fi
    set_state none "$(state_epoch)"
    stopping=0
    trap 'stopping=1; [ -n "$PM" ] && kill -INT "$PM" 2>/dev/null' TERM INT
    while :; do
        if [ -z "$PM" ]; then
            await_data
            start_postmaster
            # SIGTERM may have come while no postmaster ran (a hook's restart): stop this one
            if [ "$stopping" = 1 ]; then kill -INT "$PM" 2>/dev/null; fi
        fi
        while alive "$PM" && [ "$(my_ppid)" = "$PARENT" ]; do sleep 0.2; done
        if [ "$(my_ppid)" != "$PARENT" ]; then
            fence
            log "supervisor $PARENT gone: fenced postmaster $PM and left it running"
            exit 0
        fi
        wait "$PM" 2>/dev/null
        status=$?
        [ "$stopping" = 1 ] && exit 0
        if [ -f "$DIR/restart" ]; then
            rm -f "$DIR/restart"
            # a hook stopped the server on purpose (demote, rewind, re-clone): start it again,
            # as a standby, once the hook is done with the data directory
            while [ -f "$DIR/hold" ] && [ "$(my_ppid)" = "$PARENT" ]; do sleep 0.05; done
            [ "$stopping" = 1 ] && exit 0  # shutting down: no restart
            PM=""
            continue
        fi
        log "postmaster exited ($status)"
        exit "$status"
    done
}

stop_postmaster() {  # under the hook lock: the run loop starts it again once hold is gone
    touch "$DIR/hold" "$DIR/restart"
    as_pg touch "$PGDATA/standby.signal"
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_pg "$BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t "${PG_STOP_TIMEOUT:-20}" >/dev/null 2>&1 ||
            as_pg "$BIN/pg_ctl" stop -D "$PGDATA" -m immediate -w -t 10 >/dev/null 2>&1
    fi
}

release_hold() { rm -f "$DIR/hold"; }

# ---------------------------------------------------------------- health
health() {
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        # a node without data may run for election only while no cluster exists (the run
        # loop asks the catalog; a check must stay cheap)
        if [ -f "$DIR/cluster-exists" ]; then echo "no data yet: cloning"; exit 1; fi
        echo "no cluster yet: candidate for bootstrap"; exit 0
    fi
    # a promote hook at work: the server may restart or leave recovery under our feet, and
    # the role in our environment changes only once it succeeded
    if promoting; then echo "promotion in progress"; exit 0; fi
    rec=$(in_recovery)
    case "$rec" in t | f) ;; *) echo "not answering: $rec"; exit 1 ;; esac
    srole=$(state_role)
    sepoch=$(state_epoch)
    case "${AUTOPILOT_ROLE:-}" in
    primary)
        if [ "$sepoch" -ne "$EPOCH" ]; then
            echo "transition in progress (epoch $EPOCH, applied $srole $sepoch)"; exit 0
        fi
        if [ "$srole" != primary ]; then echo "elected (epoch $EPOCH) but $srole"; exit 1; fi
        if [ "$rec" != f ]; then echo "elected primary but in recovery"; exit 1; fi
        echo "primary"
        ;;
    replica)
        if [ "$rec" = f ] || may_follow "$srole" "$sepoch"; then
            locked -n converge >/dev/null 2>&1
        fi
        if [ "$(in_recovery)" = f ] && [ "$(state_role)" != primary ]; then
            echo "replica but not in recovery"; exit 1
        fi
        echo "replica of ${AUTOPILOT_LEADER_ADDRESS:-?}:${AUTOPILOT_LEADER_PORT:-?}"
        ;;
    *)
        echo "up, no role yet (in recovery: $rec)"
        ;;
    esac
}

may_follow() {  # may_follow ROLE EPOCH: may a replica-role hook of our epoch act now?
    case "$1" in
    none) return 0 ;;
    primary) [ "$EPOCH" -gt "$2" ] ;;  # a newer leader than the one we were promoted as
    *) [ "$EPOCH" -ge "$2" ] ;;
    esac
}

# ---------------------------------------------------------------- fence, demote
fence() {
    # every commit from now on waits for a standby that never exists: none is acknowledged
    # (one psql: this is the first thing a deposed primary does, every millisecond counts)
    "$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 \
        -c "alter system set synchronous_standby_names = '$FENCED_NAME'" \
        -c 'select pg_reload_conf()' >/dev/null 2>&1
}

demote() {
    if [ "$(in_recovery)" = f ]; then
        stop_postmaster
        : >"$DIR/rewind-needed"  # this node wrote as a primary: check its history on rejoin
        release_hold
        log "demoted: stopped the primary, starting again as a standby"
    fi
    set_state replica "$(state_epoch)"
    # no waiting for the restarted standby: a hand-over releases the lock only after this
    # hook, and leaderChanged (follow) re-points it once a new primary is known
}

# ---------------------------------------------------------------- follow, rewind, detach
set_upstream() {  # set_upstream CONNINFO SLOT: primary_conninfo + reload, if it changed
    cur=$(q "select setting from pg_settings where name = 'primary_conninfo'")
    [ "$cur" = "$1" ] && return 0
    q "alter system set primary_conninfo = '$1'" >/dev/null &&
        q "alter system set primary_slot_name = '$2'" >/dev/null &&
        q 'select pg_reload_conf()' >/dev/null
}

detach() {
    [ -f "$PGDATA/PG_VERSION" ] && up || exit 0
    [ "$(in_recovery)" = t ] || exit 0
    set_upstream "" ""
    log "detached from the former primary"
}

ensure_slot() {  # on the leader HOST PORT, a physical slot named after us
    qr "$1" "$2" "select pg_create_physical_replication_slot('$NAME', true)
                  where not exists (select 1 from pg_replication_slots where slot_name = '$NAME')" \
        >/dev/null
}

rejoin() {  # rejoin HOST PORT: pg_rewind onto the leader, or a fresh clone if that fails
    stop_postmaster
    if [ "$(cat "$DIR/rewound-onto" 2>/dev/null)" = "$1:$2" ]; then
        # rewound onto this leader already and still cannot stream from it: start afresh
        log "rewind onto $1:$2 did not help: re-cloning"
        rm -rf "$PGDATA"
    fi
    if "$BIN/pg_controldata" "$PGDATA" | grep -q '^Database cluster state: *shut down in recovery'; then
        # A primary that crashed and came back as a standby: its own WAL past the fork is
        # not counted as such by pg_rewind until a crash recovery (single-user) ends it
        # with a shutdown checkpoint. Only old primaries get here (rewind-needed).
        rm -f "$PGDATA/standby.signal"
        as_pg "$BIN/postgres" --single -F -D "$PGDATA" -c config_file="$HOME_DIR/postgresql.conf" \
            -c hba_file="$DIR/pg_hba.conf" template1 </dev/null >"$DIR/single.log" 2>&1 ||
            log "single-user recovery failed: $(tail -n 1 "$DIR/single.log")"
    fi
    # pg_rewind reads the source's timeline from its control file, which a promoted server
    # updates only at its first checkpoint: until then it would say "no rewind required"
    qr "$1" "$2" "checkpoint" >/dev/null
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        :
    elif as_pg "$BIN/pg_rewind" -D "$PGDATA" --source-server="$(conninfo "$1" "$2")" \
        >"$DIR/rewind.log" 2>&1; then
        log "pg_rewind from $1:$2: $(tail -n 1 "$DIR/rewind.log")"
        echo "$1:$2" >"$DIR/rewound-onto"
    else
        log "pg_rewind from $1:$2 failed ($(tail -n 1 "$DIR/rewind.log")): re-cloning"
        rm -rf "$PGDATA"
    fi
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        rm -f "$DIR/rewound-onto"
        until clone_from "$1" "$2"; do
            sleep 1
            [ -n "$(catalog leader "$LOCK_KEY" 2>/dev/null)" ] || break
        done
    fi
    if [ -f "$PGDATA/PG_VERSION" ]; then
        # pg_rewind copied the leader's postgresql.auto.conf: point it at the leader with
        # our own slot before the server starts (it needs WAL from there to be consistent)
        ensure_slot "$1" "$2"
        printf "primary_conninfo = '%s'\nprimary_slot_name = '%s'\n" "$(conninfo "$1" "$2")" \
            "$NAME" >>"$PGDATA/postgresql.auto.conf"
        as_pg touch "$PGDATA/standby.signal"
    fi
    rm -f "$DIR/rewind-needed" "$DIR/not-streaming-since"
    release_hold
    wait_up 30
}

# Streaming for real: the walreceiver streams AND on the newest timeline this node knows of.
# A replica whose WAL went past the point where the leader's timeline forked off (it was
# ahead of the winner) fetches the new timeline's history, refuses to switch to it ("new
# timeline N forked off current database system timeline M before current recovery
# point"), then streams the old timeline up to the fork again, in a loop: its status
# flickers to 'streaming' while it never follows. Its received_tli stays below the newest
# history file's timeline, which tells the two apart.
STREAMING_SQL="coalesce((select status = 'streaming' and received_tli >= (
    select coalesce(max(('x' || substr(name, 1, 8))::bit(32)::int), 0) from pg_ls_waldir()
    where name like '%.history') from pg_stat_wal_receiver), false)"
streaming() { [ "$(q "select $STREAMING_SQL")" = t ]; }

# The health check converges too (`converge`), but under the check's timeout (1 s): a
# rewind, a re-clone or a restart killed half-way leaves the server stopped (the run loop
# waits for `hold` to go) or the data directory half rewound. So in a check the long work
# is handed to a process of its own, out of the check's process group, with its own limit;
# it takes the hook lock once the check has let it go and converges again from the start.
in_check() { [ -n "${PG_IN_CHECK:-}" ]; }
in_background() {
    log "handing the rejoin to a background converge (the check's timeout is short)"
    setsid -f env -u PG_IN_CHECK timeout "${PG_REJOIN_TIMEOUT:-600}" sh "$0" converge-bg \
        </dev/null >/dev/null 2>&1
}

follow_leader() {  # under the lock: replicate from AUTOPILOT_LEADER_*, rewinding if needed
    addr=${AUTOPILOT_LEADER_ADDRESS:-}
    lport=${AUTOPILOT_LEADER_PORT:-}
    [ -n "$addr" ] && [ -n "$lport" ] || return 0
    leader_is_me && return 0
    up || wait_up 20 || return 1
    want=$(conninfo "$addr" "$lport")
    # (a boolean concatenated to text reads 'true'/'false', not 't'/'f')
    now=$(q "select pg_is_in_recovery() || '|' || (select setting from pg_settings
              where name = 'primary_conninfo') || '|' || $STREAMING_SQL")
    if [ "$now" = "true|$want|true" ] && [ ! -f "$DIR/rewind-needed" ]; then
        rm -f "$DIR/not-streaming-since"
        return 0
    fi
    if [ "$(in_recovery)" = f ]; then
        # still a primary (a supervisor that restarted and lost): fence, restart as standby
        fence
        in_check && { in_background; return 0; }
        stop_postmaster
        : >"$DIR/rewind-needed"
        release_hold
        wait_up 20 || return 1
    fi
    if [ -f "$DIR/rewind-needed" ]; then
        in_check && { in_background; return 0; }
        rejoin "$addr" "$lport"
    fi
    ensure_slot "$addr" "$lport"
    set_upstream "$(conninfo "$addr" "$lport")" "$NAME"
    # a replica whose history forked off the leader's cannot stream from it: after a few
    # seconds without streaming it is rewound (async mode: a replica ahead of the winner)
    if streaming; then
        rm -f "$DIR/not-streaming-since"
    else
        now=$(date +%s)
        [ -f "$DIR/not-streaming-since" ] || echo "$now" >"$DIR/not-streaming-since"
        since=$(cat "$DIR/not-streaming-since")
        if [ $((now - since)) -ge "${PG_REWIND_AFTER:-5}" ] && leader_answers "$addr" "$lport"; then
            in_check && { in_background; return 0; }
            log "not streaming from $addr:$lport for $((now - since))s: rewinding"
            rejoin "$addr" "$lport"
            ensure_slot "$addr" "$lport"
            set_upstream "$(conninfo "$addr" "$lport")" "$NAME"
        fi
    fi
}

leader_answers() { [ "$(qr "$1" "$2" 'select pg_is_in_recovery()')" = f ]; }

converge() {  # under the lock: re-check, then follow the leader of our epoch
    may_follow "$(state_role)" "$(state_epoch)" || exit 0
    [ "${AUTOPILOT_ROLE:-}" = replica ] || exit 0
    follow_leader
    if [ -n "${AUTOPILOT_LEADER_ADDRESS:-}" ] && ! leader_is_me; then set_state replica "$EPOCH"; fi
}

follow() {
    [ "${AUTOPILOT_ROLE:-}" = replica ] || exit 0
    if [ -z "${AUTOPILOT_LEADER_ADDRESS:-}" ]; then detach; exit 0; fi
    leader_is_me && exit 0
    converge
}

# ---------------------------------------------------------------- promote, sync set
others() {  # names of the other members in the catalog (from VIEW when set)
    members_view | while read -r n _; do
        [ "$n" != "$NAME" ] && echo "$n"
    done
}

VIEW=""  # promote: `catalog.py view` once (sync record, then the members)
load_view() { VIEW=$(catalog view "$SERVICE" "$JOB" "$SYNC_KEY" 2>/dev/null); }
members_view() {
    if [ -n "$VIEW" ]; then echo "$VIEW" | sed 1d; else catalog members "$SERVICE" "$JOB" 2>/dev/null; fi
}
sync_record() {
    if [ -n "$VIEW" ]; then echo "$VIEW" | sed -n '1{/^-$/d;p}'; else catalog get "$SYNC_KEY" 2>/dev/null; fi
}

names_list() {  # names_list NAME...: "a","b" for synchronous_standby_names
    out=""
    for n in "$@"; do out="$out${out:+, }\"$n\""; done
    echo "$out"
}

set_sync_names() {  # set_sync_names NAME...: ANY 1 (...) or '*' for nobody known yet
    if [ $# -eq 0 ]; then v="ANY 1 (*)"; else v="ANY 1 ($(names_list "$@"))"; fi
    q "alter system set synchronous_standby_names = '$(echo "$v" | sed "s/'/''/g")'" >/dev/null
}

publish_sync() {  # publish_sync NAME...: the sync set in the KV (who may be promoted)
    set -- "$@"
    list=""
    for n in "$@"; do list="$list${list:+,}\"$n\""; done
    [ $# -eq 0 ] && list='"*"'
    printf '{"leader":"%s","epoch":%s,"sync":[%s]}' "$NAME" "$EPOCH" "$list" |
        catalog put "$SYNC_KEY" >/dev/null
}

sync_members() {  # the published sync set, one name a line ("*": everyone)
    echo "${1:-$(catalog get "$SYNC_KEY" 2>/dev/null)}" | tr -d '{}[]"' | tr ',' '\n' |
        sed -n 's/^sync://p;/^[^:]*$/p'
}
sync_leader() { echo "$1" | sed -n 's/.*"leader":"\([^"]*\)".*/\1/p'; }

eligible() {  # may this node be promoted? (prints why not)
    if [ -n "${PG_NOFAILOVER:-}" ]; then echo "tagged nofailover"; return 1; fi
    [ "$SYNC" = 1 ] || return 0
    published=$(sync_record)
    set -- $(sync_members "$published")
    [ $# -eq 0 ] && return 0  # nothing published yet: a new cluster
    [ "$(sync_leader "$published")" = "$NAME" ] && return 0
    for n in "$@"; do [ "$n" = "$NAME" ] || [ "$n" = "*" ] && return 0; done
    echo "not in the synchronous set ($*)"
    return 1
}

my_lsn() {
    q "select pg_wal_lsn_diff(case when pg_is_in_recovery()
          then greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
          else pg_current_wal_lsn() end, '0/0')::bigint"
}

peer_ahead() {
    # sync mode: a commit was acknowledged once ANY one synchronous standby had it, so the
    # one to promote is the synchronous standby that got furthest; one we cannot ask might
    # hold commits nobody else has
    mine=$(my_lsn)
    set -- $(sync_members "$(sync_record)")
    members_view | while read -r n host port _ _ nodata; do
        [ "$n" = "$NAME" ] && continue
        [ "${nodata:-0}" = 1 ] && continue  # never had data (still cloning): holds no commit
        in_set=0
        for s in "$@"; do [ "$s" = "$n" ] || [ "$s" = "*" ] && in_set=1; done
        [ $in_set = 1 ] || continue
        theirs=$(qr "$host" "$port" "select case when pg_is_in_recovery() then pg_wal_lsn_diff(
            greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint
            else -1 end")
        case "$theirs" in
        -1) ;;  # a primary (the old one, fenced) is not a candidate
        '' | *[!0-9]*) echo "$n ($host:$port) does not answer"; break ;;
        *) if [ "$theirs" -gt "$mine" ]; then echo "$n is ahead ($theirs > $mine)"; break; fi ;;
        esac
    done
}

bootstrap() {
    # the first elected node of a new cluster: only one may ever run initdb for it
    if catalog get "$INIT_KEY" >/dev/null 2>&1; then
        log "not promoting: the cluster exists but this node has no data yet"; exit 1
    fi
    rm -rf "$PGDATA.tmp"
    # with a password, the superuser gets it from initdb itself (SCRAM, PostgreSQL 15's
    # default): pg_hba.conf asks for it on every TCP connection from the first start on
    pwfile=""
    if [ -n "${PGPASSWORD:-}" ]; then
        pwfile="$DIR/initdb.pw"
        (umask 077 && printf '%s\n' "$PGPASSWORD" >"$pwfile")
        [ "$(id -u)" = 0 ] && chown "$RUN_AS:" "$pwfile"
    fi
    as_pg "$BIN/initdb" -D "$PGDATA.tmp" --data-checksums -U "$PGUSER" --auth=trust -E UTF8 ${PG_INITDB_ARGS:-} \
        ${pwfile:+--pwfile="$pwfile"} --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 ||
        { rm -f "$pwfile"; log "initdb failed"; exit 1; }
    rm -f "$pwfile"
    sysid=$("$BIN/pg_controldata" "$PGDATA.tmp" | sed -n 's/^Database system identifier: *//p')
    if ! echo "$sysid" | catalog put "$INIT_KEY" --cas 0; then
        log "not promoting: another node initialized the cluster"; rm -rf "$PGDATA.tmp"; exit 1
    fi
    mv "$PGDATA.tmp" "$PGDATA"
    log "initdb --data-checksums: system identifier $sysid"
    wait_up 30 || { log "the new cluster did not start"; exit 1; }
}

promoting() {  # a promote hook is at work (started less than a minute ago)
    [ -f "$DIR/promoting" ] && [ $(($(date +%s) - $(cat "$DIR/promoting" 2>/dev/null || echo 0))) -lt 60 ]
}

promote() {
    date +%s >"$DIR/promoting"
    trap 'rm -f "$DIR/promoting"' EXIT
    [ -f "$PGDATA/PG_VERSION" ] || bootstrap
    wait_up 20 || { log "not promoting: the server does not answer"; exit 1; }
    [ "$SYNC" = 1 ] && load_view
    why=$(eligible) || { log "not promoting: $why"; exit 1; }
    if [ "$SYNC" = 1 ] && [ "$(in_recovery)" = t ]; then
        ahead=$(peer_ahead)
        if [ -n "$ahead" ]; then log "not promoting: $ahead"; exit 1; fi
    fi
    if [ "$SYNC" = 1 ]; then
        # require a synchronous standby before the first commit: every other member may ack
        set -- $(others)
        publish_sync "$@" || { log "not promoting: cannot publish the sync set"; exit 1; }
        set_sync_names "$@"
        echo "$*" >"$DIR/sync-names"
    else
        q "alter system set synchronous_standby_names = ''" >/dev/null
    fi
    # one psql: end recovery and wait for it (pg_promote checks every 100 ms)
    out=$("$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 \
        -c "alter system set primary_conninfo = ''" -c 'select pg_reload_conf()' \
        -c 'select case when pg_is_in_recovery() then pg_promote(true, 30) else true end' 2>&1 |
        tail -n 1)
    if [ "$out" != t ] || [ "$(in_recovery)" != f ]; then
        # pg_promote gave up waiting but its request (the file `promote`) stays: a startup
        # process that was only slow would end recovery later, without the lock. Withdraw
        # it; if recovery ended meanwhile, the demote that follows this failure fences.
        rm -f "$PGDATA/promote"
        log "pg_promote failed: $out (promote request withdrawn)"
        exit 1
    fi
    set_state primary "$EPOCH"
    # from now on this data may hold WAL no other node has: check the history (pg_rewind)
    # before this node follows anyone again, even after a crash
    : >"$DIR/rewind-needed"
    rm -f "$DIR/not-streaming-since"
    log "promoted (epoch $EPOCH, timeline $(q "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"))"
}

sync_maintain() {
    # the primary's view: add replicas that stream, drop those that stopped. The published
    # set is always a superset of who may hold a commit alone: publish before adding, and
    # publish a smaller set only once the remaining standbys flushed everything so far.
    [ "$SYNC" = 1 ] && [ "${AUTOPILOT_ROLE:-}" = primary ] || exit 0
    [ "$(state_role)" = primary ] && [ "$(state_epoch)" = "$EPOCH" ] || exit 0
    [ "$(in_recovery)" = f ] || exit 0
    cur=$(cat "$DIR/sync-names" 2>/dev/null)
    streaming=$(q "select application_name from pg_stat_replication
                   where state = 'streaming' order by 1" | tr '\n' ' ')
    streaming=$(echo $streaming)
    [ -n "$streaming" ] || exit 0  # never down to nobody: commits wait instead (no loss)
    [ "$streaming" = "$cur" ] && exit 0
    union=$(echo $cur $streaming | tr ' ' '\n' | sort -u | tr '\n' ' ')
    publish_sync $union || exit 1
    set_sync_names $streaming
    q 'select pg_reload_conf()' >/dev/null
    lsn=$(q 'select pg_current_wal_lsn()')
    i=0
    until [ "$(q "select count(*) from pg_stat_replication where application_name in
                  ($(names_list $streaming | tr '"' "'")) and flush_lsn >= '$lsn'")" -ge 1 ]; do
        i=$((i + 1))
        [ $i -ge 50 ] && { echo "$streaming" >"$DIR/sync-names"; exit 0; }
        sleep 0.1
    done
    publish_sync $streaming
    echo "$streaming" >"$DIR/sync-names"
    log "synchronous standbys: $streaming"
}

# ---------------------------------------------------------------- slots of departed members
slots() {
    # The primary drops the replication slot of a member gone for good: absent from the
    # catalog (a stopped supervisor deregisters) or there with a critical check (a killed
    # one), continuously for PG_SLOT_GRACE seconds. A member merely restarting is back
    # within the grace and keeps its slot, so it resumes streaming where it stopped. The
    # clock starts again whenever the member shows up, its slot is in use or has moved
    # (the member came back between two looks and received WAL), or this node is promoted
    # again: a marker records the epoch, the time and the slot's restart_lsn.
    [ "${AUTOPILOT_ROLE:-}" = primary ] || exit 0
    [ "$(state_role)" = primary ] && [ "$(state_epoch)" = "$EPOCH" ] || exit 0
    [ "$(in_recovery)" = f ] || exit 0
    members=$(catalog members "$SERVICE" "$JOB") || exit 0  # no catalog: decide nothing
    list=$(q "select slot_name || ' ' || active || ' ' || coalesce(restart_lsn::text, '-')
              from pg_replication_slots where slot_type = 'physical' order by 1") || exit 0
    grace=${PG_SLOT_GRACE:-1800}
    now=$(date +%s)
    marks="$DIR/slot-gone"
    mkdir -p "$marks"
    echo "$list" | while read -r slot active lsn; do
        [ -n "$slot" ] || continue
        present=$(echo "$members" | awk -v n="$slot" '$1 == n && $4 != "critical" { print 1 }')
        if [ "$active" = t ] || [ -n "$present" ]; then rm -f "$marks/$slot"; continue; fi
        set -- $(cat "$marks/$slot" 2>/dev/null)
        if [ "${1:-}" != "$EPOCH" ] || [ "${3:-}" != "$lsn" ]; then
            echo "$EPOCH $now $lsn" >"$marks/$slot"
            log "replication slot $slot: its member is gone; dropped after ${grace}s"
            continue
        fi
        if [ $((now - $2)) -ge "$grace" ]; then
            q "select pg_drop_replication_slot(slot_name) from pg_replication_slots
               where slot_name = '$slot' and not active" >/dev/null &&
                log "dropped replication slot $slot: its member was gone for $((now - $2))s"
            rm -f "$marks/$slot"
        fi
    done
    # markers of slots that no longer exist
    for f in $(ls "$marks"); do
        echo "$list" | grep -q "^$f " || rm -f "$marks/$f"
    done
}

position() {
    why=$(eligible) || { echo "$why" >&2; exit 1; }
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        # no data: a candidate (the lowest) only while no cluster exists, to bootstrap one
        [ -f "$DIR/cluster-exists" ] && exit 1
        exit 0
    fi
    up || exit 1
    my_lsn
}

identity() {
    "$BIN/pg_controldata" "$PGDATA" 2>/dev/null | sed -n 's/^Database system identifier: *//p' |
        tr -d '\n'
    echo "-$(q 'select extract(epoch from pg_postmaster_start_time())')"
}

case "${1:-}" in
run) run ;;
health) health ;;
promote) locked promote-locked ;;
demote) fence; locked demote-locked ;;  # fencing first: always safe (a standby ignores it)
follow) locked follow-locked ;;
detach) locked detach-locked ;;
sync) locked -n sync-locked ;;
slots) [ "${AUTOPILOT_ROLE:-}" = primary ] && locked -n slots-locked; exit 0 ;;  # busy: next time
identity) identity ;;
position) position ;;
promote-locked) promote ;;
demote-locked) demote ;;
follow-locked) follow ;;
detach-locked) detach ;;
sync-locked) sync_maintain ;;
slots-locked) slots ;;
converge) PG_IN_CHECK=1; converge ;;  # from the health check, under the hook lock
converge-bg) locked converge-long ;;  # in_background: the long work, under the hook lock
converge-long) converge ;;
*) echo "usage: $0 run|health|promote|demote|follow|detach|identity|position|sync|slots" >&2; exit 2 ;;
esac
