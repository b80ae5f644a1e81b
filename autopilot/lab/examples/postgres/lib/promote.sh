# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# Promote (`promote`): initdb for a new cluster, or end recovery once this node is proven
# the one to promote; a hand-over's named successor takes a faster path. The other
# replicas are pointed at the new primary in parallel.

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
        names=""
    fi
    others=$(while read -r n _; do [ "$n" != "$NAME" ] && echo "$n"; done <"$DIR/promote.$$.members")
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
    out=$(psql_local 2>&1 <<SQL
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
    out=$(psql_local -v published=true 2>&1 <<SQL
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
