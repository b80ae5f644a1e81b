# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# Follow, rewind, detach (`follow`, `detach`, `converge`): stream from the elected leader,
# pg_rewind first (or a fresh clone) when this node's history forked off the leader's.

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
    out=$(psql_local 2>&1 <<'SQL'
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
