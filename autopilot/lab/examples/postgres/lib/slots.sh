# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# The replication slots of departed members (`slots`, periodic on the primary).

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
