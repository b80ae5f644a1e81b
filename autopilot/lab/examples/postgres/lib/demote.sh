# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# Fence and demote (`demote`, `successor`): refuse every commit at once, stop the server
# and start it again as a standby; on a SIGTERM hand-over, name the successor and hand it
# what it needs to promote at once.

fence() {
    # every commit from now on waits for a standby that never exists: none is acknowledged
    # (one psql: this is the first thing a deposed primary does, every millisecond counts)
    psql_local \
        -c "alter system set synchronous_standby_names = '$FENCED_NAME'" \
        -c 'select pg_reload_conf()' >/dev/null 2>&1
}

fence_listing() {
    # the fence, and in the same psql the standbys that stream from us, most advanced
    # first (a hand-over's successor is one of them): one process on the write gap
    psql_local 2>/dev/null <<SQL
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
