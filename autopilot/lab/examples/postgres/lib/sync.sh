# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# The synchronous set (sync mode, PG_SYNC=1): synchronous_standby_names, the sync record
# published in the KV (who may be promoted), and the primary's periodic upkeep of both
# (`sync`).

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
