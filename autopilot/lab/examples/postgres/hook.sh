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
#
# Layout: this script only reads its parts and dispatches the verb; the parts sit in lib/
# beside it, one responsibility each, and define functions and settings only:
#   lib/common.sh    settings from the environment; psql, logging, conninfo
#   lib/state.sh     the role and epoch applied last, the hook lock, hooks-at-work markers
#   lib/catalog.sh   the catalog from the shell (catalog.py, curl, the promote's view)
#   lib/sync.sh      sync mode: synchronous_standby_names, the published sync set; `sync`
#   lib/position.sh  `identity`, `position`, eligibility
#   lib/run.sh       `run`: data directory, postmaster, the stop/restart protocol
#   lib/health.sh    `health` and its repair
#   lib/demote.sh    fence, `demote`, a hand-over's successor
#   lib/follow.sh    `follow`, `detach`, rewind, re-clone
#   lib/promote.sh   `promote`, bootstrap, a hand-over's promote, re-pointing the others
#   lib/slots.sh     `slots`: the replication slots of departed members
set -u
set -f  # no globbing: "*" is a value here (the sync set of a record from older hooks)

# The parts: lib/ beside this script. $0 is this script's path as sh was given it (the
# hooks are run as `sh /path/to/hook.sh VERB`): its directory costs no process; a path
# without lib/ beside it (a symbolic link to this script) is resolved by readlink.
case "$0" in */*) LIB=${0%/*}/lib ;; *) LIB=lib ;; esac
[ -f "$LIB/common.sh" ] || LIB=$(dirname "$(readlink -f "$0")")/lib
# shellcheck source=lib/common.sh
. "$LIB/common.sh"
# shellcheck source=lib/state.sh
. "$LIB/state.sh"
# shellcheck source=lib/catalog.sh
. "$LIB/catalog.sh"
# shellcheck source=lib/sync.sh
. "$LIB/sync.sh"
# shellcheck source=lib/position.sh
. "$LIB/position.sh"
# shellcheck source=lib/run.sh
. "$LIB/run.sh"
# shellcheck source=lib/health.sh
. "$LIB/health.sh"
# shellcheck source=lib/demote.sh
. "$LIB/demote.sh"
# shellcheck source=lib/follow.sh
. "$LIB/follow.sh"
# shellcheck source=lib/promote.sh
. "$LIB/promote.sh"
# shellcheck source=lib/slots.sh
. "$LIB/slots.sh"

# The verb. The *-locked verbs, converge* and repair-detached are this script run again by
# itself (locked, repair, in_background), under the hook lock or apart from a check.
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
