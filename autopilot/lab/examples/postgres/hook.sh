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
set -f  # no globbing: "*" is a value here (the sync set of a record from older hooks)

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

trace() {  # a step's time in the hook log only (where a failover's time goes)
    if [ -n "${PG_HOOK_LOG:-}" ]; then echo "$(date +%s.%N) ${AUTOPILOT_ROLE:-none} trace $*" >>"$PG_HOOK_LOG"; fi
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
conninfo() {  # conninfo HOST PORT [NAME]: how node NAME (default: this one) reaches a primary
    ci="host=$1 port=$2 user=$PGUSER application_name=${3:-$NAME} connect_timeout=2"
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

interrupt_pm() {
    # SIGINT: a fast shutdown. A child started with & has SIGINT ignored until the
    # postmaster installs its handlers, which it does before it writes its pid file: a
    # SIGINT sent earlier is lost (then a SIGTERM from the supervisor is a smart shutdown
    # that waits for every client). So wait for that file first.
    i=0
    while alive "$PM" && [ "$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)" != "$PM" ] &&
        [ $i -lt 100 ]; do
        sleep 0.05
        i=$((i + 1))
    done
    alive "$PM" && kill -INT "$PM" 2>/dev/null
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
    # left by a hand-over (the server stays stopped), and hook markers of an earlier run
    rm -f "$DIR/hold" "$DIR/restart" "$DIR/promoting" "$DIR/demoting"
    trap 'stopping=1; [ -n "$PM" ] && interrupt_pm' TERM INT
    while :; do
        if [ -z "$PM" ]; then
            await_data
            start_postmaster
            # SIGTERM may have come while no postmaster ran (a hook's restart): stop this one
            if [ "$stopping" = 1 ]; then interrupt_pm; fi
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
            while [ -f "$DIR/hold" ] && [ "$stopping" = 0 ] && [ "$(my_ppid)" = "$PARENT" ]; do
                sleep 0.05
            done
            [ "$stopping" = 1 ] && exit 0  # shutting down: no restart
            PM=""
            continue
        fi
        log "postmaster exited ($status)"
        exit "$status"
    done
}

stop_postmaster() {  # under the hook lock: the run loop starts it again once hold is gone
    : >"$DIR/hold"
    : >"$DIR/restart"
    if [ ! -f "$PGDATA/postmaster.pid" ]; then as_pg touch "$PGDATA/standby.signal"; return 0; fi
    # a fast shutdown, watched every 10 ms: pg_ctl -w looks every 100 ms, and on a hand-over
    # that tenth of a second is write gap. The postmaster removes its pid file last.
    pid=
    read -r pid 2>/dev/null <"$PGDATA/postmaster.pid"
    case "$pid" in '' | *[!0-9]*) pid="" ;; esac
    [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null
    # (after the signal: three process starts less before the shutdown begins; the run
    # loop starts nothing before `hold` is gone)
    as_pg touch "$PGDATA/standby.signal"
    if [ -n "$pid" ]; then
        i=0
        limit=$((${PG_STOP_TIMEOUT:-20} * 100))
        while [ -f "$PGDATA/postmaster.pid" ] && [ $i -lt $limit ]; do
            sleep 0.01
            i=$((i + 1))
        done
    fi
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_pg "$BIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 1 >/dev/null 2>&1 ||
            as_pg "$BIN/pg_ctl" stop -D "$PGDATA" -m immediate -w -t 10 >/dev/null 2>&1
    fi
}

release_hold() { rm -f "$DIR/hold"; }

# ---------------------------------------------------------------- health
# The check runs every 200 ms in the lab's fast profile and must finish well inside the
# check TTL (1.25 s) even on a loaded machine: one psql reads everything it needs, and the
# repair (converge: re-point, rewind) runs only when something is off, detached from the
# check so that the check's timeout can never kill a pg_rewind half-way.

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
    if demoting; then echo "demotion in progress"; exit 0; fi
    info=$(q "select case when pg_is_in_recovery() then 't' else 'f' end || '|' ||
        case when $STREAMING_SQL then 'streaming' else 'not streaming' end || '|' ||
        current_setting('primary_conninfo')")
    rec=${info%%|*}
    case "$rec" in t | f) ;; *) echo "not answering: $info"; exit 1 ;; esac
    rest=${info#*|}
    wal_status=${rest%%|*}
    cur_conninfo=${rest#*|}
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
        if [ "$rec" = f ] && [ "$srole" = primary ] && ! may_follow "$srole" "$sepoch"; then
            # promoted under this epoch: this check started before the role changed
            echo "promoted (epoch $sepoch)"; exit 0
        fi
        if [ "$rec" = f ]; then
            # writable but not elected: refuse commits now, restart as a standby behind us
            fence
            repair
            echo "replica but not in recovery (fenced; restarting as a standby)"; exit 1
        fi
        if may_follow "$srole" "$sepoch" && [ -n "${AUTOPILOT_LEADER_ADDRESS:-}" ] &&
            ! leader_is_me && {
                [ "$wal_status" != streaming ] || [ -f "$DIR/rewind-needed" ] ||
                    [ "$cur_conninfo" != "$(conninfo "$AUTOPILOT_LEADER_ADDRESS" "${AUTOPILOT_LEADER_PORT:-}")" ]
            }; then
            repair
        fi
        echo "replica of ${AUTOPILOT_LEADER_ADDRESS:-?}:${AUTOPILOT_LEADER_PORT:-?}${wal_status:+ ($wal_status)}"
        ;;
    *)
        echo "up, no role yet (in recovery: $rec)"
        ;;
    esac
}

repair() {  # converge in a process of its own, once at a time, outliving this check
    setsid -f env -u PG_IN_CHECK timeout "${PG_REJOIN_TIMEOUT:-600}" sh "$0" repair-detached \
        </dev/null >/dev/null 2>&1
}

repair_detached() {
    # a standby re-points only at a leader that answers as a primary: a check that started
    # before the election cleared the leader (hand-over) must not point us back at the old one
    if [ "$(in_recovery)" = t ] && [ -n "${AUTOPILOT_LEADER_ADDRESS:-}" ] && [ ! -f "$DIR/rewind-needed" ] &&
        ! leader_answers "$AUTOPILOT_LEADER_ADDRESS" "${AUTOPILOT_LEADER_PORT:-}"; then
        exit 0
    fi
    locked -n converge-long
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

fence_listing() {
    # the fence, and in the same psql the standbys that stream from us, most advanced
    # first (a hand-over's successor is one of them): one process on the write gap
    "$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 2>/dev/null <<SQL
alter system set synchronous_standby_names = '$FENCED_NAME';
select pg_reload_conf();
select 'candidate ' || application_name from pg_stat_replication where state = 'streaming'
 order by flush_lsn desc nulls last, application_name;
SQL
}

demote() {
    # Under the hook lock, taken after the fence. A primary has no standby.signal (the run
    # loop starts every server with one; only a promotion removes it). On a hand-over
    # this is write gap: shell builtins wherever they do (the successor file was removed
    # before the fence).
    if [ -f "$PGDATA/postmaster.pid" ] && [ ! -f "$PGDATA/standby.signal" ]; then
        # a sync job that held the lock meanwhile may have set synchronous_standby_names
        # (ALTER SYSTEM) after our fence: postgresql.auto.conf tells, fence again then
        fenced=""
        while read -r line; do
            [ "$line" = "synchronous_standby_names = '$FENCED_NAME'" ] && fenced=1
        done 2>/dev/null <"$PGDATA/postgresql.auto.conf"
        [ -n "$fenced" ] || fence
        stop_postmaster
        : >"$DIR/rewind-needed"  # this node wrote as a primary: check its history on rejoin
        if is_handover; then
            # the supervisor is stopping: no restart as a standby (the hold stays until the
            # run loop ends; its next start clears it), and the CPU goes to the successor
            set_state replica "$(state_epoch)"
            cands=""
            while read -r word cand; do
                [ "$word" = candidate ] && cands="$cands $cand"
            done <"$DIR/demote.candidates"
            choose_successor "$cands"
            return 0
        fi
        release_hold
        log "demoted: stopped the primary, starting again as a standby"
    fi
    rm -f "$DIR/demote.members" "$DIR/demote.candidates"
    set_state replica "$(state_epoch)"
    # no waiting for the restarted standby: a hand-over releases the lock only after this
    # hook, and leaderChanged (follow) re-points it once a new primary is known
}

choose_successor() {  # choose_successor "NAME...": write $DIR/successor (address:port)
    # A fast shutdown ends only once every connected standby flushed all of our WAL (the
    # shutdown checkpoint included), so each standby that was streaming holds every commit
    # we acknowledged: the first of them (most advanced before the stop) that may be
    # promoted takes over at once, without a candidacy round. The election falls back to a
    # candidacy if it does not take the lock. Shell builtins only: this is write gap.
    cands=$1
    sync_names=""
    read -r sync_names 2>/dev/null <"$DIR/sync-names"
    for from in cache catalog; do
        if [ $from = cache ]; then
            # the members as our promote hook read them: a python3 process less on the
            # write gap (a standby that streams to us is alive: its check need not be read)
            list="$DIR/members-cache"
            [ -f "$list" ] || continue
        else
            list="$DIR/demote.members"
            [ -f "$list" ] || catalog members "$SERVICE" "$JOB" >"$list" 2>/dev/null
        fi
        for cand in $cands; do
            # sync mode: only a synchronous standby (the published set is a superset of it)
            if [ "$SYNC" = 1 ]; then
                case " $sync_names " in *" $cand "*) ;; *) continue ;; esac
            fi
            while read -r n host port status tags _; do
                [ "$n" = "$cand" ] || continue
                [ $from = cache ] || [ "$status" = passing ] || continue
                case ",$tags," in *,nofailover,*) continue ;; esac
                # (read by the election once this hook has ended: no reader meanwhile)
                { handover_notes "$list" "$sync_names"; echo "$host:$port"; } >"$DIR/successor"
                log_gap "demoted: stopped the primary (hand-over); successor $cand ($host:$port, from the $from)"
                return 0
            done <"$list"
        done
    done
    log "demoted: stopped the primary (hand-over); no successor to name (a candidacy decides)"
}

log_gap() {  # log MESSAGE without a process start on the write gap: the file's line (and
    # its `date`) is written by a process of its own that does not hold our output open
    echo "pg-hook: $*" >&2
    [ -n "${PG_HOOK_LOG:-}" ] || return 0
    (echo "$(date +%s.%N) ${AUTOPILOT_ROLE:-none} $*" >>"$PG_HOOK_LOG") \
        </dev/null >/dev/null 2>&1 3>&- 9>&- &
}

handover_notes() {  # handover_notes MEMBERS-FILE SYNC-NAMES: what the successor is handed
    # (the election passes these KEY=VALUE lines to the successor's promote hook as
    # AUTOPILOT_HANDOVER_<KEY>): with them it promotes without reading the catalog or
    # asking its peers. CHECKPOINT is our shutdown checkpoint, only after a clean shutdown:
    # every commit we acknowledged lies before it, so a successor that received WAL up to
    # it holds them all (one that did not, e.g. it lost its connection during the stop,
    # refuses, and a candidacy decides).
    state="" ckpt=""
    while IFS=: read -r k v; do
        v=${v#"${v%%[! ]*}"}
        case "$k" in
        "Database cluster state") state=$v ;;
        "Latest checkpoint location") ckpt=$v ;;
        esac
    done <<CONTROL
$("$BIN/pg_controldata" "$PGDATA" 2>/dev/null)
CONTROL
    [ "$state" = "shut down" ] && [ -n "$ckpt" ] || return 0
    members=""
    while read -r line; do members="$members${members:+;}$line"; done <"$1"
    echo "primary=$NAME"
    echo "checkpoint=$ckpt"
    echo "members=$members"
    if [ "$SYNC" = 1 ]; then echo "sync=$2"; fi
}

successor() {  # the election's successor hook: what the demote hook chose, if anything
    cat "$DIR/successor" 2>/dev/null
}

pre_checkpoint() {
    # a SIGTERM hand-over: a checkpoint while we still serve, so that the shutdown
    # checkpoint (after the fence, on the write gap) has little left to write
    [ -f "$PGDATA/PG_VERSION" ] || return 0
    PGOPTIONS="-c statement_timeout=${PG_PRE_CHECKPOINT_TIMEOUT:-10}s" q checkpoint >/dev/null
}

pre_slots() {
    # a SIGTERM hand-over, while we still serve: on every other member, a replication slot
    # for each of the rest, so that whichever becomes our successor can point the others
    # at itself at once (a walreceiver asking for a slot that does not exist yet retries
    # 200 ms later: that wait was the first commit's, in sync mode). Not reserved (no WAL
    # held) until a standby streams through it. In parallel, one psql per member.
    [ -f "$DIR/members-cache" ] || return 0
    # (the cache's statuses may be old: every member is tried, a dead one costs a connect
    # timeout in a process of its own)
    while read -r n host port _; do
        [ "$n" != "$NAME" ] || continue
        sql=""
        while read -r o _; do
            [ "$o" != "$n" ] || continue
            sql="$sql select pg_create_physical_replication_slot('$o', false) where
                pg_is_in_recovery() and not exists (select 1 from pg_replication_slots
                where slot_name = '$o');"
        done <"$DIR/members-cache"
        qr "$host" "$port" "$sql" >/dev/null 2>&1 &
    done <"$DIR/members-cache"
    wait
}

is_handover() {  # this demote is a SIGTERM hand-over (the election says why it steps down)
    case "${AUTOPILOT_STEP_DOWN_REASON:-}" in shutdown | stopping) return 0 ;; esac
    return 1
}

demoting() { marked "$DIR/demoting"; }  # a demote hook at work (see mark)

# ---------------------------------------------------------------- follow, rewind, detach
set_upstream() {  # set_upstream CONNINFO SLOT: primary_conninfo + reload, if it changed
    cur=$(q "select setting from pg_settings where name = 'primary_conninfo'")
    [ "$cur" = "$1" ] && return 0
    q "alter system set primary_conninfo = '$1'" >/dev/null &&
        q "alter system set primary_slot_name = '$2'" >/dev/null &&
        q 'select pg_reload_conf()' >/dev/null
}

detach() {
    # On the path of every failover: one psql (a server that does not answer streams from
    # nobody; a primary has nothing to detach). It also reports our position (the
    # election's `position=N`: the round then need not start the position hook, whose
    # catalog read is a python3 process). Not for a node tagged nofailover (the position
    # hook refuses for it). In sync mode the published sync set is not read here: a member
    # outside it that ranks first is refused by its own promote hook, which reads it afresh
    # (and the others then wait up to candidacyTimeout). So not for a server started in the
    # last 10 s either: a node that just (re)joined is added to the set by the primary's
    # sync job within PG_SYNC_INTERVAL, and until then only the position hook can tell.
    [ -f "$PGDATA/PG_VERSION" ] || exit 0
    out=$("$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 2>&1 <<'SQL'
select pg_is_in_recovery() and current_setting('primary_conninfo') <> '' as go \gset
\if :go
alter system set primary_conninfo = '';
alter system set primary_slot_name = '';
select pg_reload_conf();
\echo detached
\endif
select 'position=' || pg_wal_lsn_diff(greatest(pg_last_wal_receive_lsn(),
       pg_last_wal_replay_lsn()), '0/0')::bigint
 where pg_is_in_recovery() and greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) is not null
   and pg_postmaster_start_time() < now() - interval '10 seconds';
SQL
)
    case "$out" in *detached*) log "detached from the former primary" ;; esac
    pos=$(echo "$out" | sed -n 's/^position=\([0-9][0-9]*\)$/\1/p' | tail -n 1)
    if [ -n "$pos" ] && [ -z "${PG_NOFAILOVER:-}" ]; then echo "position=$pos"; fi
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
    # fd 3 is flock(1)'s hold on hook.lock, inherited: kept open, it would hold the lock
    # the background converge then waits for (30 s, then it gave up: no rewind ever ran)
    setsid -f env -u PG_IN_CHECK timeout "${PG_REJOIN_TIMEOUT:-600}" sh "$0" converge-bg \
        </dev/null >/dev/null 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
}

follow_leader() {  # under the lock: replicate from AUTOPILOT_LEADER_*, rewinding if needed
    addr=${AUTOPILOT_LEADER_ADDRESS:-}
    lport=${AUTOPILOT_LEADER_PORT:-}
    [ -n "$addr" ] && [ -n "$lport" ] || return 0
    leader_is_me && return 0
    # no data yet: the run loop clones it (waiting here for a server that cannot start held
    # the hook lock the clone waits for, ~20 s on every new replica)
    [ -f "$PGDATA/PG_VERSION" ] || return 0
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
    # no leader: the election's detach hook has detached us already; detaching again here
    # could undo a re-point by a new primary's promote hook (it points us at itself)
    [ -n "${AUTOPILOT_LEADER_ADDRESS:-}" ] || exit 0
    leader_is_me && exit 0
    converge
}

# ---------------------------------------------------------------- promote, sync set
others() {  # names of the other members in the catalog (from VIEW when set)
    members_view | while read -r n _; do
        [ "$n" != "$NAME" ] && echo "$n"
    done
}

VIEW=""  # promote: the sync record ("-": none) on one line, then the members, read once
load_view() { VIEW=$(catalog view "$SERVICE" "$JOB" "$SYNC_KEY" 2>/dev/null); }
members_view() {  # (builtins once the view was read: the promote calls it on its path)
    if [ -z "$VIEW" ]; then catalog members "$SERVICE" "$JOB" 2>/dev/null; return; fi
    case "$VIEW" in *"$NL"*) printf '%s\n' "${VIEW#*"$NL"}" ;; esac
}
sync_record() {
    if [ -z "$VIEW" ]; then kv_get "$SYNC_KEY" 2>/dev/null; return; fi
    line=${VIEW%%"$NL"*}
    [ "$line" = - ] || printf '%s\n' "$line"
}

names_list() {  # names_list NAME...: "a","b" for synchronous_standby_names
    out=""
    for n in "$@"; do out="$out${out:+, }\"$n\""; done
    echo "$out"
}

sync_names() {  # sync_names NAME...: synchronous_standby_names requiring one of them
    # (none: the placeholder, which no standby has: commits wait until one is proven)
    if [ $# -eq 0 ]; then echo "$UNPROVEN_NAME"; else echo "ANY 1 ($(names_list "$@"))"; fi
}

set_sync_names() {  # set_sync_names NAME...
    q "alter system set synchronous_standby_names = '$(sync_names "$@" | sed "s/'/''/g")'" >/dev/null
}

sync_json() {  # sync_json NAME...: the sync record naming us leader (an empty set: only
    # the leader may be promoted)
    list=""
    for n in "$@"; do list="$list${list:+,}\"$n\""; done
    printf '{"leader":"%s","epoch":%s,"sync":[%s]}' "$NAME" "$EPOCH" "$list"
}

publish_sync() {  # publish_sync NAME...: the sync set in the KV (who may be promoted)
    # (curl where there is one: the sync job publishes right after a failover, when the
    # rewound old primary streams again, and a python3 start is CPU the primary needs then)
    sync_json "$@" >"$DIR/sync.json"
    if command -v "$CURL" >/dev/null 2>&1; then
        [ "$(kv_put_config "$SYNC_KEY" "$DIR/sync.json" | "$CURL" -K - 2>/dev/null)" = true ]
    else
        catalog put "$SYNC_KEY" <"$DIR/sync.json" >/dev/null
    fi
}

kv_get() {  # kv_get KEY: its value; exit 3 when the key does not exist (as catalog.py get)
    if command -v "$CURL" >/dev/null 2>&1; then
        got=$({ curl_config "/v1/kv/$1?raw"; printf 'write-out = "\\n%%{http_code}"\n'; } |
            "$CURL" -K - 2>/dev/null)
        case "$got" in
        *"${NL}200") printf '%s\n' "${got%"${NL}200"}"; return 0 ;;
        *"${NL}404") return 3 ;;
        esac
        # (any other answer: catalog.py, which says what went wrong)
    fi
    catalog get "$1"
}

# A sync-mode promote reads the sync record and the members, decides, then publishes the
# new set: two python3 starts on a failover's path, 0.1-0.7 s each on a loaded machine.
# view_put_start runs `catalog.py view-put` once, which prints the view and then waits on a
# FIFO for the record to store (or for nothing, when the hook refuses or dies).
view_put_start() {
    VP_F="$DIR/promote.$$.vp"
    rm -f "$VP_F.go" "$VP_F.out"
    mkfifo "$VP_F.go" "$VP_F.out" 2>/dev/null || return 1
    # (both FIFOs are opened in the same order on both sides: no polling, no deadlock)
    (timeout 30 "$PY" "$HOME_DIR/catalog.py" view-put "$SERVICE" "$JOB" "$SYNC_KEY" \
        <"$VP_F.go" >"$VP_F.out" 2>/dev/null) &
    VP_PID=$!
    # (descriptors 6 and 7: 9 holds the hook lock, which closing it would release)
    exec 6>"$VP_F.go" 7<"$VP_F.out"
    VIEW=""
    while IFS= read -r line <&7; do
        if [ "$line" = "--" ]; then return 0; fi
        VIEW="$VIEW${VIEW:+
}$line"
    done
    exec 6>&- 7<&-  # it ended without the view
    VP_PID=""
    VIEW=""
    return 1
}

view_put_finish() {  # view_put_finish RECORD: store it through the waiting process
    (printf '%s\n' "$1" >&6) 2>/dev/null
    exec 6>&-
    IFS= read -r line <&7 || line=""
    exec 7<&-
    wait "$VP_PID"
    [ "$line" = stored ]
}

sync_members() {  # the published sync set, one name a line ("*": everyone)
    rec=${1:-$(kv_get "$SYNC_KEY" 2>/dev/null)}
    case "$rec" in
    *'"sync":['*)  # the record as sync_json writes it: builtins only (on a promote's path)
        rec=${rec#*\"sync\":[}
        oifs=$IFS
        IFS=,
        for n in ${rec%%]*}; do
            n=${n#\"}
            n=${n%\"}
            [ -z "$n" ] || printf '%s\n' "$n"
        done
        IFS=$oifs
        ;;
    *) echo "$rec" | tr -d '{}[]"' | tr ',' '\n' | sed -n 's/^sync://p;/^[^:]*$/p' ;;
    esac
}
sync_leader() {
    case "$1" in *'"leader":"'*) l=${1#*\"leader\":\"}; printf '%s\n' "${l%%\"*}" ;; esac
}

eligible() {  # may this node be promoted? (prints why not)
    if [ -n "${PG_NOFAILOVER:-}" ]; then echo "tagged nofailover"; return 1; fi
    [ "$SYNC" = 1 ] || return 0
    published=$(sync_record)
    [ -n "$published" ] || return 0  # nothing published yet: a new cluster
    [ "$(sync_leader "$published")" = "$NAME" ] && return 0
    # (an empty set: no standby was proven yet, only its leader may be promoted)
    set -- $(sync_members "$published")
    for n in "$@"; do [ "$n" = "$NAME" ] || [ "$n" = "*" ] && return 0; done
    echo "not in the synchronous set (${*:-empty})"
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
    # hold commits nobody else has. Every peer is asked at once (a dead one costs its
    # connect timeout once, not once per peer).
    # The members it asks that answer in recovery and not ahead of us are proven to be on
    # our history (a prefix of it: they streamed from the last primary, as we did): the
    # promote names them, and no one else, in synchronous_standby_names ($DIR/promote.$$.proven).
    # Not the last primary (the record's leader): it may have written WAL no standby received.
    mine=${self_lsn:-$(my_lsn)}  # (promote read it beside the catalog)
    record=$(sync_record)
    last=$(sync_leader "$record")
    [ "$last" != "$NAME" ] || last=""
    set --
    [ -z "$record" ] || set -- $(sync_members "$record")
    tmp="$DIR/ahead.$$"
    i=0
    members_view >"$tmp.members"
    while read -r n host port _ _ nodata; do
        [ "$n" = "$NAME" ] && continue
        [ "${nodata:-0}" = 1 ] && continue  # never had data (still cloning): holds no commit
        in_set=0
        for s in "$@"; do [ "$s" = "$n" ] || [ "$s" = "*" ] && in_set=1; done
        [ $in_set = 1 ] || continue
        echo "$n $host $port" >"$tmp.$i.who"
        qr "$host" "$port" "select case when pg_is_in_recovery() then pg_wal_lsn_diff(
            greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint
            else -1 end" >"$tmp.$i" 2>&1 &
        i=$((i + 1))
    done <"$tmp.members"
    wait
    j=0
    while [ $j -lt $i ]; do
        read -r n host port <"$tmp.$j.who"
        theirs=$(cat "$tmp.$j")
        j=$((j + 1))
        case "$theirs" in
        -1) ;;  # a primary (the old one, fenced) is not a candidate
        '' | *[!0-9]*) echo "$n ($host:$port) does not answer"; break ;;
        *)
            if [ "$theirs" -gt "$mine" ]; then echo "$n is ahead ($theirs > $mine)"; break; fi
            [ "$n" = "$last" ] || echo "$n" >>"$DIR/promote.$$.proven"
            ;;
        esac
    done
    rm -f "$tmp".*
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

promoting() { marked "$DIR/promoting"; }  # a promote hook is at work

# A hook at work leaves a marker: its shell's pid and start time (/proc/PID/stat, field
# 22), read back with builtins only (the health check runs every 200 ms) and alive only
# while that very process is: a pid reused by another process (pid_max may be 32768)
# does not count, and a marker left behind (a killed hook, a hand-over's) is harmless.
START=""
proc_start() {  # proc_start PID: START = that process's start time, 1 if there is none
    START=""
    line=""
    read -r line 2>/dev/null </proc/"$1"/stat || return 1
    set -- ${line##*) }
    [ $# -ge 20 ] || return 1
    shift 19
    START=$1
}
mark() { proc_start $$ && echo "$$ $START" >"$1"; }
marked() {
    [ -f "$1" ] || return 1
    pid="" st=""
    read -r pid st 2>/dev/null <"$1"
    [ -n "$pid" ] && [ -n "$st" ] && proc_start "$pid" && [ "$START" = "$st" ]
}

promote() {
    mark "$DIR/promoting"
    trap 'rm -f "$DIR/promoting" "$DIR/promote.$$".*' EXIT
    # (a hand-over's promote has its psql print when it began: no `date` on the gap)
    if [ -f "$PGDATA/PG_VERSION" ] && handed_over; then promote_handed_over; return; fi
    trace "promote: start"
    [ -f "$PGDATA/PG_VERSION" ] || bootstrap
    # our role and WAL position, the members (to re-point) and in sync mode the sync
    # record: one psql that fetches the catalog's part with curl and parses its JSON (no
    # python3 start on a failover's path: 0.2-1.5 s of it on a loaded machine)
    VP_PID="" CURL_VIEW=""
    rec="" self_lsn=""
    if out=$(view_by_psql) && view_parse "$out"; then
        CURL_VIEW=1
    else
        # without curl, or when that failed: catalog.py, in parallel with a psql for our
        # role and position (in sync mode the same python3 process publishes later)
        q "select case when pg_is_in_recovery() then 't ' || coalesce(pg_wal_lsn_diff(greatest(
             pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint::text, '')
             else 'f' end" >"$DIR/promote.$$.self" 2>&1 &
        SELF_PID=$!
        if [ "$SYNC" = 1 ]; then
            view_put_start || load_view
            echo "$VIEW" | sed 1d >"$DIR/promote.$$.members"
        else
            catalog members "$SERVICE" "$JOB" >"$DIR/promote.$$.members" 2>/dev/null &
        fi
        wait "$SELF_PID"
        read -r rec self_lsn <"$DIR/promote.$$.self"
    fi
    case "$rec" in t | f) ;; *) wait_up 20 || { log "not promoting: the server does not answer"; exit 1; }; rec=$(in_recovery); self_lsn="" ;; esac
    trace "promote: view read"
    why=$(eligible) || { log "not promoting: $why"; exit 1; }
    if [ "$SYNC" = 1 ]; then
        others=$(while read -r n _; do [ "$n" != "$NAME" ] && echo "$n"; done <"$DIR/promote.$$.members")
        # the last primary (it may have written WAL no standby received: forked off our
        # history until its rewind) is left to its own rejoin, not re-pointed at us
        old_primary=$(sync_leader "$(sync_record)")
        : >"$DIR/promote.$$.proven"
        if [ "$rec" = t ]; then
            ahead=$(peer_ahead)
            if [ -n "$ahead" ]; then log "not promoting: $ahead"; exit 1; fi
        elif [ "$old_primary" = "$NAME" ]; then
            # already the primary (a restarted supervisor adopting the server it promoted
            # runs this hook again): the record is our own, every standby in it was proven
            # on our timeline (by this hook or the sync job) and can have WAL from us only
            for n in $(sync_members "$(sync_record)"); do
                [ "$n" = "$NAME" ] || [ "$n" = "*" ] || echo "$n"
            done >"$DIR/promote.$$.proven"
        fi
        # Only members proven to be on our history may acknowledge our commits (peer_ahead:
        # members of the published set that answered, in recovery, not ahead of us): a
        # standby whose history forked off ours reports a flush position of ITS timeline,
        # which could release commits no standby received. With none, a placeholder nobody
        # has: the first commits wait (strict) until the sync job proves a standby.
        # Published before the first commit, and only now that the checks passed. (Not
        # earlier, in parallel with the checks: a record naming us leader without us in its
        # set, left by a promote that then refused, would let a later promote skip asking
        # us although we may hold acknowledged commits no one else has; and with us in the
        # set, a later promote would wait for us forever once we died as the primary.)
        set --
        while read -r n; do set -- "$@" "$n"; done <"$DIR/promote.$$.proven"
        if [ -n "$VP_PID" ]; then
            view_put_finish "$(sync_json "$@")"
        elif [ -n "$CURL_VIEW" ]; then
            sync_json "$@" >"$DIR/promote.$$.sync"
            kv_put_config "$SYNC_KEY" "$DIR/promote.$$.sync" >"$DIR/promote.$$.put" &&
                [ "$("$CURL" -K "$DIR/promote.$$.put" 2>/dev/null)" = true ]
        else
            publish_sync "$@"
        fi || { log "not promoting: cannot publish the sync set"; exit 1; }
        names=$(sync_names "$@")
        first_sync=${*:-none}
        echo "$*" >"$DIR/sync-names"
    else
        wait  # the members list
        others=$(while read -r n _; do [ "$n" != "$NAME" ] && echo "$n"; done <"$DIR/promote.$$.members")
        names=""
    fi
    cp "$DIR/promote.$$.members" "$DIR/members-cache" 2>/dev/null
    trace "promote: peers checked, sync set published"
    # A slot for every other member before it is pointed at us (they may stream from us
    # while we are still a standby: cascading, which follows our promotion by itself):
    # each re-point creates its own first, in parallel with the one psql that sets the
    # primary's settings, creates them all (whoever comes second finds it there) and ends
    # recovery.
    slots=""
    for n in $others; do slots="$slots $(slot_sql "$n")"; done
    repoint_slots=1 repoint_others
    # end recovery and wait for it, polling every 10 ms (pg_promote's own wait polls every
    # 100 ms: a tenth of a second of write gap on every hand-over); the same psql reads
    # the new timeline
    out=$("$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 2>&1 <<SQL
alter system set synchronous_standby_names = '$(echo "$names" | sed "s/'/''/g")';
select pg_reload_conf();
$slots
select 'at set ' || extract(epoch from clock_timestamp());
select pg_promote(false) where pg_is_in_recovery();
do \$\$ begin
  for i in 1..3000 loop exit when not pg_is_in_recovery(); perform pg_sleep(0.01); end loop;
end \$\$;
-- (a primary does not use it; off the write path, for the day it starts as a standby)
alter system set primary_conninfo = '';
select case when pg_is_in_recovery() then 't' else 'f ' ||
       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end;
SQL
)
    trace "promote: promoted"
    traces "$out"
    wait  # the re-points
    case "$out" in
    *"
f "* | "f "*) ;;
    *)
        # pg_promote's request (the file `promote`) stays: a startup process that was only
        # slow would end recovery later, without the lock. Withdraw it; if recovery ended
        # meanwhile, the demote that follows this failure fences.
        rm -f "$PGDATA/promote"
        log "promotion failed: $(echo $out) (promote request withdrawn)"
        exit 1
        ;;
    esac
    promoted "${out##*f }"
}

promoted() {  # promoted TIMELINE: recovery ended under the lock
    set_state primary "$EPOCH"
    # from now on this data may hold WAL no other node has: check the history (pg_rewind)
    # before this node follows anyone again, even after a crash
    : >"$DIR/rewind-needed"
    # (a rewind onto some leader before this promotion says nothing about the next one)
    rm -f "$DIR/not-streaming-since" "$DIR/rewound-onto"
    log "promoted (epoch $EPOCH, timeline $1;${first_sync:+ synchronous: $first_sync;} re-pointed:${repointed:- none})"
}

handed_over() {  # named successor of a hand-over that handed us what we need?
    # (AUTOPILOT_HANDOVER_*: the old primary's notes, handover_notes; only a clean
    # shutdown gives a checkpoint; in sync mode it named us from its synchronous set)
    [ -n "${AUTOPILOT_HANDOVER_CHECKPOINT:-}" ] && [ -n "${AUTOPILOT_HANDOVER_MEMBERS:-}" ] &&
        [ -z "${PG_NOFAILOVER:-}" ] || return 1
    case "$AUTOPILOT_HANDOVER_CHECKPOINT" in *[!0-9A-Fa-f/]* | /* | */ | */*/*) return 1 ;; */*) ;; *) return 1 ;; esac
    [ "$SYNC" = 1 ] || return 0
    case " ${AUTOPILOT_HANDOVER_SYNC:-} " in *" $NAME "*) return 0 ;; esac
    return 1
}

promote_handed_over() {
    # A SIGTERM hand-over named us: the old primary stopped cleanly and handed us its
    # members, its sync set and its shutdown checkpoint. On the write gap, no catalog read
    # and no peer asked, and one psql does it all: it checks that we received WAL past
    # that checkpoint (then we hold every commit the old primary acknowledged, and no peer
    # can be ahead of us: they all streamed from it, and its WAL ends there), sets the
    # primary's settings, publishes the sync record (sync mode: curl, started by psql
    # itself between two statements, only once the check passed) and promotes.
    oifs=$IFS
    IFS=';'
    for m in $AUTOPILOT_HANDOVER_MEMBERS; do echo "$m"; done >"$DIR/promote.$$.members"
    IFS=$oifs
    others="" slots=""
    while read -r n _; do
        [ -n "$n" ] && [ "$n" != "$NAME" ] || continue
        others="$others${others:+ }$n"
        slots="$slots select pg_create_physical_replication_slot('$n', true) where not exists
            (select 1 from pg_replication_slots where slot_name = '$n');"
    done <"$DIR/promote.$$.members"
    handover_from=${AUTOPILOT_HANDOVER_PRIMARY:-}
    names="" publish="" published=""
    if [ "$SYNC" = 1 ]; then
        # Only the old primary's synchronous standbys may acknowledge our commits: each
        # was proven by its sync job to stream its timeline, whose WAL ends at the shutdown
        # checkpoint we received past, so their history is a prefix of ours. Not another
        # member (one in recovery whose history forked off, e.g. a primary before this
        # one, not rewound yet, would report a flush position of its own timeline and
        # could release commits no standby received), nor the old primary (stopped; its
        # sync job proves it again once it streams from us). None: the placeholder.
        set --
        for n in ${AUTOPILOT_HANDOVER_SYNC:-}; do
            case "$n" in "$NAME" | "$handover_from" | '*') ;; *) set -- "$@" "$n" ;; esac
        done
        names=$(sync_names "$@")
        first_sync=${*:-none}
        # the record names them before the first commit (psql's \set runs the command:
        # its output, true or false from the catalog, decides whether the promotion goes on)
        sync_json "$@" >"$DIR/promote.$$.sync"
        if kv_put_config "$SYNC_KEY" "$DIR/promote.$$.sync" >"$DIR/promote.$$.curl"; then
            publish="\\set published \`$CURL -K '$DIR/promote.$$.curl' || echo false\`"
        else
            publish="\\set published \`$PY '$HOME_DIR/catalog.py' put '$SYNC_KEY' <'$DIR/promote.$$.sync' 2>/dev/null && echo true || echo false\`"
        fi
        publish="$publish
select 'at published ' || extract(epoch from clock_timestamp());"
        published=":published"
    fi
    # the others stream from us at once (from nobody since the old primary stopped; if we
    # refuse below, a candidacy winner re-points them again)
    old_primary=$handover_from
    repoint_others
    out=$("$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 -v published=true 2>&1 <<SQL
select 'at start ' || extract(epoch from clock_timestamp());
select pg_is_in_recovery() and greatest(coalesce(pg_last_wal_receive_lsn(), '0/0'),
       coalesce(pg_last_wal_replay_lsn(), '0/0')) > '$AUTOPILOT_HANDOVER_CHECKPOINT'::pg_lsn as ok \gset
\if :ok
alter system set synchronous_standby_names = '$names';
select pg_reload_conf();
$slots
select 'at checked ' || extract(epoch from clock_timestamp());
$publish
\if :published
select pg_promote(false) where pg_is_in_recovery();
do \$\$ begin
  for i in 1..3000 loop exit when not pg_is_in_recovery(); perform pg_sleep(0.01); end loop;
end \$\$;
select 'at promoted ' || extract(epoch from clock_timestamp());
alter system set primary_conninfo = '';
select case when pg_is_in_recovery() then 't' else 'f ' ||
       ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int end;
\else
\echo not promoting: cannot publish the sync set
\endif
\else
select 'not promoting: received ' || coalesce(pg_last_wal_receive_lsn()::text, 'nothing')
       || ', replayed ' || coalesce(pg_last_wal_replay_lsn()::text, 'nothing')
       || ', the old primary''s shutdown checkpoint is at $AUTOPILOT_HANDOVER_CHECKPOINT'
       || case when pg_is_in_recovery() then '' else ' (not in recovery)' end
       || ' (a candidacy decides)';
\endif
SQL
)
    wait  # the re-points
    traces "$out"
    case "$out" in
    *"
f "*) ;;
    *)
        rm -f "$PGDATA/promote"  # (see promote)
        log "hand-over: $(echo "$out" | grep -v '^at ' | tr '\n' ' ')"
        exit 1
        ;;
    esac
    [ "$SYNC" = 1 ] && echo "$*" >"$DIR/sync-names"
    cp "$DIR/promote.$$.members" "$DIR/members-cache" 2>/dev/null
    promoted "${out##*
f }"
}

slot_sql() {  # slot_sql NAME: create that replication slot unless it exists
    # (one statement that a concurrent creator cannot make fail)
    echo "do \$\$ begin perform pg_create_physical_replication_slot('$1', true);
        exception when duplicate_object then null; end \$\$;"
}

traces() {  # the "at STEP TIME" lines a psql printed, as trace lines of their own time
    [ -n "${PG_HOOK_LOG:-}" ] || return 0
    echo "$1" | while read -r at step t; do
        [ "$at" = at ] && echo "$t ${AUTOPILOT_ROLE:-none} trace promote: $step" >>"$PG_HOOK_LOG"
    done
}

curl_config() {  # curl_config PATH [FILE]: curl's config for PATH on the catalog (PUT FILE)
    caddr=${CONSUL_HTTP_ADDR:-${CONSUL:-127.0.0.1:8500}}
    case "$caddr" in *://*) ;; *) caddr="http://$caddr" ;; esac
    printf 'url = "%s%s"\n' "$caddr" "$1"
    if [ -n "${2:-}" ]; then printf 'request = "PUT"\ndata-binary = "@%s"\n' "$2"; fi
    printf 'max-time = %s\nsilent\nshow-error\n' "${PG_CATALOG_TIMEOUT:-2}"
    if [ -n "${CONSUL_HTTP_TOKEN:-}" ]; then printf 'header = "X-Consul-Token: %s"\n' "$CONSUL_HTTP_TOKEN"; fi
}

kv_put_config() {  # kv_put_config KEY FILE: curl's config to PUT FILE into KEY (1: no curl)
    command -v "$CURL" >/dev/null 2>&1 || return 1
    curl_config "/v1/kv/$1" "$2"
    echo fail
}

view_by_psql() {
    # A failover's promote reads its role and WAL position, the members and (sync mode)
    # the sync record in one psql: psql runs curl itself (\set with backquotes) and parses
    # the JSON into the lines of `catalog.py view` (view_parse). Exit 1 without curl.
    command -v "$CURL" >/dev/null 2>&1 || return 1
    cfg="$DIR/promote.$$"
    { curl_config "/v1/health/service/$SERVICE"; echo fail; } >"$cfg.health"
    record_sql="select 'record -';"
    if [ "$SYNC" = 1 ]; then
        # the status code after the body: a missing key (404) is no record, an error is not
        { curl_config "/v1/kv/$SYNC_KEY?raw"; printf 'write-out = "\\n%%{http_code}"\n'; } >"$cfg.record"
        record_sql="\\set record \`$CURL -K '$cfg.record'\`
select 'record ' || case right(:'record', 3)
    when '200' then coalesce(nullif(replace(left(:'record', -4), E'\\n', ' '), ''), '-')
    when '404' then '-' else '?' end;"
    fi
    "$BIN/psql" -X -Atq -h 127.0.0.1 -p "$PORT" -v ON_ERROR_STOP=1 2>&1 <<SQL
select 'self ' || case when pg_is_in_recovery() then 't ' || coalesce(pg_wal_lsn_diff(
    greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint::text, '')
    else 'f' end;
$record_sql
\\set health \`$CURL -K '$cfg.health'\`
select 'member ' || translate(case when starts_with(s->>'ID', '$JOB-')
           then substr(s->>'ID', length('$JOB-') + 1) else s->>'ID' end, '-.', '__')
    || ' ' || coalesce(nullif(s->>'Address', ''), e->'Node'->>'Address')
    || ' ' || (s->>'Port')
    || ' ' || coalesce((select c->>'Status' from json_array_elements(ck) c
                        where coalesce(c->>'ServiceID', '') <> ''
                        order by case c->>'Status' when 'passing' then 0 when 'warning' then 1
                                 when 'critical' then 2 else 3 end desc limit 1), 'passing')
    || ' ' || coalesce(nullif((select string_agg(t, ',') from json_array_elements_text(
                  case when json_typeof(s->'Tags') = 'array' then s->'Tags' else '[]' end) t),
                  ''), '-')
    || ' ' || case when exists (select 1 from json_array_elements(ck) c
                                where coalesce(c->>'ServiceID', '') <> ''
                                  and c->>'Status' = 'critical'
                                  and c->>'Output' like 'no data yet%') then 1 else 0 end
  from json_array_elements(:'health'::json) with ordinality x(e, i),
       lateral (select e->'Service' as s, case when json_typeof(e->'Checks') = 'array'
                then e->'Checks' else '[]' end as ck) y
 order by i;
select 'end';
SQL
}

view_parse() {  # view_parse OUTPUT: rec, self_lsn, VIEW and the members file from it
    # (builtins only); 1 unless complete (and, in sync mode, with the record read)
    record="?" members="" complete=""
    : >"$DIR/promote.$$.members"
    while IFS= read -r line; do
        case "$line" in
        "self "*) set -- ${line#self }; rec=${1:-}; self_lsn=${2:-} ;;
        "record "*) record=${line#record } ;;
        "member "*)
            members="$members$NL${line#member }"
            printf '%s\n' "${line#member }" >>"$DIR/promote.$$.members"
            ;;
        end) complete=1 ;;
        esac
    done <<VIEW
$1
VIEW
    [ -n "$complete" ] && [ "$record" != "?" ] || return 1
    case "$rec" in t | f) ;; *) return 1 ;; esac
    VIEW="$record$members"
}

repoint_others() {
    # The other replicas stream from us right away, in parallel, instead of after the
    # election announced us and each one's follow job ran: in sync mode the first commit
    # needs one of them, and that chain is most of a failover's write gap. Only servers in
    # recovery are touched (a deposed primary restarting is left to its own rejoin); their
    # follow job later finds the same primary_conninfo and does nothing.
    repointed=""
    [ -n "$MY_IP" ] || return 0
    while read -r n host port status _; do
        [ "$n" = "$NAME" ] && continue
        # the old primary: stopped (a hand-over), or it may have written WAL no standby
        # received (a failover): its own rejoin rewinds it first
        [ "$n" = "${old_primary:-}" ] && continue
        # dead or cloning: its own hooks will follow (a hand-over's list comes from the old
        # primary's cache, whose statuses may be old: every one is tried there)
        [ "$status" = critical ] && [ -z "${handover_from:-}" ] && continue
        ci=$(conninfo "$MY_IP" "$PORT" "$n")
        case "$ci" in *"'"*) ci=$(echo "$ci" | sed "s/'/''/g") ;; esac
        (
            # its slot on us first (repoint_slots: promote's own psql runs meanwhile), so
            # that its walreceiver does not find it missing and wait 200 ms to retry
            if [ -n "${repoint_slots:-}" ]; then q "$(slot_sql "$n")" >/dev/null; fi
            PGCONNECT_TIMEOUT=1 "$BIN/psql" -X -Atq -h "$host" -p "$port" -v ON_ERROR_STOP=1 \
                >/dev/null 2>&1 <<SQL
select pg_is_in_recovery() as rec \gset
\if :rec
alter system set primary_conninfo = '$ci';
alter system set primary_slot_name = '$n';
select pg_reload_conf();
\endif
SQL
        ) &
        repointed="$repointed $n"
    done <"$DIR/promote.$$.members"
}

# A standby counts as streaming for the sync set only with proof that it follows OUR
# timeline. A standby whose history forked off ours (an old primary before its rewind, a
# replica that got WAL the new primary never had) streams our history up to the fork again
# and again: its walsender shows 'streaming' at the end of each pass, until the standby's
# CopyDone arrives (every wal_retrieve_retry_interval; as long as a lossy link takes), and
# reports the flush position of ITS timeline, past what we sent it. In the sync set it could
# be promoted as "synchronous", and in synchronous_standby_names its bogus flush could
# acknowledge commits it never received. So: we sent it WAL past the start of our timeline
# (the last switch point in our newest history file; 0/0 on timeline 1: nothing to fork
# from), and it has not flushed more than we sent.
TIMELINE_START_SQL="coalesce((select max(split_part(l, E'\t', 2)::pg_lsn) from (
    select regexp_split_to_table(pg_read_file('pg_wal/' || name), E'\n') l from (
        select name from pg_ls_waldir() where name like '%.history' order by name desc limit 1
    ) h) x where l ~ E'^[0-9]+\t[0-9A-Fa-f]+/[0-9A-Fa-f]+'), '0/0')"
SYNC_PROOF_SQL="state = 'streaming' and sent_lsn > $TIMELINE_START_SQL and flush_lsn <= sent_lsn"

sync_maintain() {
    # the primary's view: add replicas that stream, drop those that stopped. The published
    # set is always a superset of who may hold a commit alone: publish before adding, and
    # publish a smaller set only once the remaining standbys flushed everything so far.
    # (every PG_SYNC_INTERVAL on the primary: while nothing changes, builtins and one psql)
    [ "$SYNC" = 1 ] && [ "${AUTOPILOT_ROLE:-}" = primary ] || exit 0
    srole="" sepoch=""
    read -r srole sepoch 2>/dev/null <"$STATE"
    [ "$srole" = primary ] && [ "$sepoch" = "$EPOCH" ] || exit 0
    # out of recovery, and the proven standbys, in one line ("primary node_2 node_3")
    now=$(q "select case when pg_is_in_recovery() then 'recovery' else 'primary' || coalesce(
                 ' ' || string_agg(application_name, ' ' order by application_name), '') end
             from pg_stat_replication where $SYNC_PROOF_SQL")
    case "$now" in primary | "primary "*) ;; *) exit 0 ;; esac
    streaming=${now#primary}
    streaming=${streaming# }
    cur=""
    read -r cur 2>/dev/null <"$DIR/sync-names"
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
    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        why=$(eligible) || { echo "$why" >&2; exit 1; }
        # no data: a candidate (the lowest) only while no cluster exists, to bootstrap one
        [ -f "$DIR/cluster-exists" ] && exit 1
        exit 0
    fi
    # on the path of every failover: our LSN (psql) while eligible asks the catalog
    my_lsn >"$DIR/position.$$" 2>/dev/null &
    why=$(eligible)
    ok=$?
    wait
    lsn=$(cat "$DIR/position.$$")
    rm -f "$DIR/position.$$"
    [ $ok = 0 ] || { echo "$why" >&2; exit 1; }
    case "$lsn" in '' | *[!0-9]*) echo "not answering" >&2; exit 1 ;; esac
    echo "$lsn"
}

identity() {
    "$BIN/pg_controldata" "$PGDATA" 2>/dev/null | sed -n 's/^Database system identifier: *//p' |
        tr -d '\n'
    echo "-$(q 'select extract(epoch from pg_postmaster_start_time())')"
}

case "${1:-}" in
run) run ;;
health) health ;;
promote)
    # the hook lock on a descriptor of this shell: no second shell on a failover's path
    [ -d "$DIR" ] || mkdir -p "$DIR"
    (flock -w "${PG_LOCK_WAIT:-30}" 9 && promote) 9>"$DIR/hook.lock"
    ;;
demote)
    # fencing first: always safe (a standby ignores it). Meanwhile the check passes
    # ("demotion in progress"): a check failing on the stopping server would invalidate the
    # session, and the lock would then carry a lock-delay and no successor.
    [ -d "$DIR" ] || mkdir -p "$DIR"
    mark "$DIR/demoting"
    # (a hand-over leaves it: the check tells by the pid, and a process less on the gap)
    is_handover || trap 'rm -f "$DIR/demoting"' EXIT
    rm -f "$DIR/demote.members" "$DIR/demote.candidates" "$DIR/successor"
    if is_handover; then
        pre_slots &
        pre_checkpoint
        wait
    fi
    fence_listing >"$DIR/demote.candidates"
    # the hook lock on a descriptor of this shell: no second shell to start on the gap
    (flock -w "${PG_LOCK_WAIT:-30}" 9 && demote) 9>"$DIR/hook.lock"
    ;;
successor) successor ;;
follow) locked follow-locked ;;
detach) locked detach-locked ;;
sync)  # (a replica starts no flock every PG_SYNC_INTERVAL: nothing to do there)
    if [ "${AUTOPILOT_ROLE:-}" = primary ] && [ "$SYNC" = 1 ]; then locked -n sync-locked; fi ;;
slots) [ "${AUTOPILOT_ROLE:-}" = primary ] && locked -n slots-locked; exit 0 ;;  # busy: next time
identity) identity ;;
view) trap 'rm -f "$DIR/promote.$$".*' EXIT; view_by_psql ;;  # (what a promote reads; tests)
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
repair-detached) repair_detached ;;
*) echo "usage: $0 run|health|promote|demote|follow|detach|identity|position|sync|slots" >&2; exit 2 ;;
esac
