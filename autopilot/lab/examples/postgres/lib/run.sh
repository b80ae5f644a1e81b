# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# The postgres job (`run`): it bootstraps (waits for a primary to clone from) and starts
# the postmaster, always as a standby, and keeps it running; the stop/restart protocol the
# other hooks use with its loop ($DIR/hold, $DIR/restart).

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
