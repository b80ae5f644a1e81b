# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# The health check (`health`), and its repair, handed to a process of its own.

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
