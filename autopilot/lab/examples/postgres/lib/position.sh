# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# What the election asks a candidate: `identity` (the data's incarnation), `position` (how
# far its WAL goes) and whether it may be promoted at all (nofailover, the sync set).

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
