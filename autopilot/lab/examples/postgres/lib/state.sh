# shellcheck shell=sh
# Sourced by hook.sh, the PostgreSQL example's hooks: functions and settings only.
# The state of the transitions: the role and epoch a hook applied last, the hook lock that
# every state-changing hook holds, and the markers of a promote or demote hook at work
# (the health check reads them).

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

may_follow() {  # may_follow ROLE EPOCH: may a replica-role hook of our epoch act now?
    case "$1" in
    none) return 0 ;;
    primary) [ "$EPOCH" -gt "$2" ] ;;  # a newer leader than the one we were promoted as
    *) [ "$EPOCH" -ge "$2" ] ;;
    esac
}

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

promoting() { marked "$DIR/promoting"; }  # a promote hook is at work

demoting() { marked "$DIR/demoting"; }  # a demote hook at work (see mark)
