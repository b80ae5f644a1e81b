#!/bin/sh
# Redis hooks for autopilot: one small script, one verb per hook.
#
#   run       the redis job itself: starts redis-server detached and fenced (or adopts one
#             left running by a supervisor that died) and fences it if the supervisor goes
#   health    PING, plus the node's replication role agreeing with the election
#   identity  election: the data incarnation of this redis-server (run_id and replid)
#   position  election: how far this node's data goes (replication offset), for candidacy
#   detach    election: the lock left the primary we followed: stop replicating from it
#   promote   election won: REPLICAOF NO ONE, then open for writes
#   demote    election lost: stop accepting writes at once, then follow the new leader
#   follow    the leader changed: replicate from it (nothing to do if it is us)
#
# Fencing: a node that is not the elected primary is a replica, of the leader or of nothing.
# "Nothing" is REPLICAOF 127.0.0.1 0, a master that can never answer: the node keeps its data,
# refuses writes (READONLY) and refuses to be a replication source (SYNC gets NOMASTERLINK),
# so a restarted node, empty or holding an old AOF, can never overwrite its peers' data.
# redis.conf starts every redis-server that way and demote returns to it; only promote makes
# a master. `min-replicas-to-write 10` is kept as a second fence on a master: with fewer than
# ten good replicas it refuses every write with NOREPLICAS. Promote lowers it (to 0, or to
# 1 in no-loss mode where clients also use WAIT 1 <ms>).
set -u

PORT=${REDIS_PORT:-6379}
HOST=${REDIS_CLI_HOST:-127.0.0.1}
DIR=${REDIS_DIR:-/data}
HOME_DIR=${REDIS_HOME:-$(dirname "$0")}
FENCE=10
NOWHERE="127.0.0.1 0"  # the master of a detached replica: port 0 refuses every connection
if [ "${REDIS_NO_LOSS:-0}" = 1 ]; then OPEN=1; else OPEN=0; fi
# A replication PING moves offsets by 14 bytes and reaches replicas at different moments; no
# data command is that short, so a peer 14 bytes ahead holds no write we lack.
PING_BYTES=14

cli() { redis-cli -h "$HOST" -p "$PORT" "$@"; }

log() {
    # one line per hook action on stderr (autopilot logs it) and, for the lab, in a file
    msg="$(date +%s.%N) ${AUTOPILOT_ROLE:-none} $*"
    echo "redis-hook: $msg" >&2
    if [ -n "${REDIS_HOOK_LOG:-}" ]; then echo "$msg" >>"$REDIS_HOOK_LOG"; fi
}

info_field() {  # info_field NAME: one field of INFO replication
    cli info replication 2>/dev/null | tr -d '\r' | sed -n "s/^$1://p"
}

fence() {
    # writes first (effective at once), then detach: replica of nothing, data kept
    printf 'CONFIG SET min-replicas-to-write %s\nREPLICAOF %s\n' "$FENCE" "$NOWHERE" |
        cli >/dev/null 2>&1
}

detached() {  # a replica of nothing (see NOWHERE)
    [ "$(info_field master_host) $(info_field master_port)" = "$NOWHERE" ]
}

leader_is_me() {
    [ "${AUTOPILOT_LEADER_ADDRESS:-}" = "${AUTOPILOT_REDIS_IP:-}" ] &&
        [ "${AUTOPILOT_LEADER_PORT:-}" = "$PORT" ]
}

follow_leader() {
    # REPLICAOF the elected leader unless it is ourselves or unknown; idempotent
    addr=${AUTOPILOT_LEADER_ADDRESS:-}
    lport=${AUTOPILOT_LEADER_PORT:-}
    [ -n "$addr" ] && [ -n "$lport" ] || return 0
    leader_is_me && return 0
    if [ "$(info_field role)" = slave ] && [ "$(info_field master_host)" = "$addr" ] &&
        [ "$(info_field master_port)" = "$lport" ]; then
        return 0
    fi
    out=$(cli replicaof "$addr" "$lport" 2>&1)
    log "replicaof $addr $lport: $out"
}

alive() { kill -0 "$1" 2>/dev/null; }

my_ppid() { set -- $(cat /proc/$$/stat 2>/dev/null); echo "${4:-0}"; }

run() {
    mkdir -p "$DIR"
    pidfile="$DIR/redis-server.pid"
    parent=$(my_ppid)
    pid=""
    if [ -f "$pidfile" ]; then
        old=$(cat "$pidfile")
        if alive "$old" && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q redis-server; then
            pid=$old
            fence
            log "adopted redis-server pid $pid left by a previous supervisor (fenced)"
        fi
    fi
    if [ -z "$pid" ]; then
        # detached (redis.conf: replicaof NOWHERE) and fenced, whatever data it loads
        if [ "${REDIS_APPENDONLY:-0}" = 1 ]; then
            aof="--appendonly yes --appendfsync ${REDIS_APPENDFSYNC:-everysec}"
        else
            aof="--appendonly no"
        fi
        redis-server "$HOME_DIR/redis.conf" --port "$PORT" --dir "$DIR" \
            --bind ${REDIS_BIND:-0.0.0.0} --pidfile "$pidfile" $aof \
            --min-replicas-to-write "$FENCE" ${REDIS_EXTRA_ARGS:-} &
        pid=$!
        echo "$pid" >"$pidfile"
    fi
    # whatever this node was before, this redis-server is fenced now and no transition has
    # been applied to it: "none". A primary whose redis restarted thus fails its check
    # (same epoch, role none), and the next decision of the election (promote, or follow a
    # leader of any epoch) is applied.
    set_state none "$(state_epoch)"
    trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
    while alive "$pid"; do
        if [ "$(my_ppid)" != "$parent" ]; then
            # the supervisor is gone: nobody renews our lease any more, so stop writes now
            fence
            log "supervisor $parent gone: fenced redis-server $pid and left it running"
            exit 0
        fi
        sleep 0.2
    done
    wait "$pid" 2>/dev/null
    status=$?
    rm -f "$pidfile"
    exit "$status"
}

# The last transition a hook applied, as "ROLE EPOCH" in $DIR/autopilot-role (ROLE: none,
# primary, replica; EPOCH: the election's LockIndex). Hooks and health checks are separate
# processes started with the environment of their moment, so one started just before a
# promotion still says AUTOPILOT_ROLE=replica: it must not act on that. Every
# state-changing hook holds $DIR/hook.lock and compares epochs first.
STATE="$DIR/autopilot-role"
EPOCH=${AUTOPILOT_LEADER_EPOCH:-0}
case "$EPOCH" in ''|*[!0-9]*) EPOCH=0 ;; esac

state_role() { set -- $(cat "$STATE" 2>/dev/null); echo "${1:-none}"; }
state_epoch() { set -- $(cat "$STATE" 2>/dev/null); echo "${2:-0}"; }
set_state() { echo "$1 $2" >"$STATE.tmp" && mv "$STATE.tmp" "$STATE"; }

locked() {  # locked [-n] CMD...: run CMD holding the hook lock (-n: skip if busy)
    wait=-w5
    if [ "$1" = -n ]; then wait=-n; shift; fi
    mkdir -p "$DIR"
    flock $wait "$DIR/hook.lock" sh "$0" "$@"
}

CATALOG=${CONSUL_HTTP_ADDR:-${CONSUL:-}}
CATALOG=${CATALOG#*://}
CATALOG=${CATALOG%%/*}

catalog_reachable() {
    # a TCP connection answered by the catalog (redis-cli reads its HTTP error reply as a
    # protocol error): the kernel accepts it even when the catalog process is starved of
    # CPU, so this fails only when the network path is cut or the catalog is down
    [ -n "$CATALOG" ] || return 0
    out=$(timeout "${REDIS_CATALOG_PROBE_TIMEOUT:-0.5}" \
        redis-cli -h "${CATALOG%:*}" -p "${CATALOG##*:}" ping 2>&1)
    case "$out" in *"Protocol error"* | *PONG*) return 0 ;; esac
    return 1
}

wait_redis() {  # redis may still be starting when the first leaderChanged arrives
    i=0
    while [ "$(cli ping 2>/dev/null)" != PONG ] && [ $i -lt 40 ]; do sleep 0.1; i=$((i + 1)); done
}

health() {
    # a refusal shorter than the check's budget (a full client table, a busy restart) is
    # retried here rather than reported: one failed check would fail the catalog check at
    # once, and a primary's failed check means a failover
    i=0
    until pong=$(cli ping 2>&1) && [ "$pong" = PONG ]; do
        i=$((i + 1))
        if [ $i -ge "${REDIS_PING_TRIES:-5}" ]; then echo "ping: $pong"; exit 1; fi
        sleep 0.1
    done
    role=$(info_field role)
    srole=$(state_role)
    sepoch=$(state_epoch)
    case "${AUTOPILOT_ROLE:-}" in
    primary)
        if [ "$sepoch" -ne "$EPOCH" ]; then
            # a promotion not applied yet, or this check predates a newer transition
            echo "transition in progress (epoch $EPOCH, applied $srole $sepoch)"; exit 0
        fi
        if [ "$srole" != primary ]; then
            echo "elected primary (epoch $EPOCH) but redis is $srole"; exit 1
        fi
        if [ "$role" != master ]; then echo "elected primary but redis is $role"; exit 1; fi
        fenced=$(cli config get min-replicas-to-write | tail -n 1)
        if [ "$fenced" = "$FENCE" ]; then echo "elected primary but still fenced"; exit 1; fi
        if [ "${REDIS_FENCE_ON_CATALOG_LOSS:-1}" = 1 ] && ! catalog_reachable; then
            # our heartbeats cannot reach the catalog either: it will invalidate our session
            # after the check's TTL, sooner than the session TTL. Step down first.
            echo "elected primary but the catalog at $CATALOG is unreachable"; exit 1
        fi
        echo "primary, offset $(info_field master_repl_offset)"
        ;;
    replica)
        # converge instead of failing: a replica of the wrong node is re-pointed, and a
        # replica of a dead primary stays healthy so that it can run for election
        if may_follow "$srole" "$sepoch"; then locked -n converge; fi
        echo "replica of ${AUTOPILOT_LEADER_ADDRESS:-?}:${AUTOPILOT_LEADER_PORT:-?}, link $(info_field master_link_status)"
        ;;
    *)
        echo "up, no role yet ($role)"
        ;;
    esac
}

may_follow() {  # may_follow ROLE EPOCH: may a replica-role hook of our epoch act now?
    case "$1" in
    none) return 0 ;;  # a fresh redis-server: follow whoever leads
    primary) return 1 ;;  # promoted after this process started: stale
    *) [ "$EPOCH" -ge "$2" ] ;;
    esac
}

converge() {  # under the lock: re-check, then fence and follow the leader of our epoch
    may_follow "$(state_role)" "$(state_epoch)" || exit 0
    if [ "$(info_field role)" = master ]; then fence; fi
    follow_leader
    if [ -n "${AUTOPILOT_LEADER_ADDRESS:-}" ]; then set_state replica "$EPOCH"; fi
}

my_position() {  # the offset of the data this node holds; fails if redis cannot tell
    info=$(cli info replication 2>/dev/null | tr -d '\r') || return 1
    off=$(echo "$info" | sed -n 's/^master_repl_offset://p')
    case "$off" in '' | *[!0-9]*) return 1 ;; esac
    echo "$off"
}

peer_ahead() {  # peer_ahead SLACK: a healthy peer whose data goes further than ours + SLACK
    # Offsets, not replication IDs: a failover keeps the offset counting (the new primary
    # continues its predecessor's history), while a node that restarted (empty, or from its
    # AOF) starts a new history at offset 0. Comparing within one replication ID only would
    # let such a node win against replicas holding every write.
    mine=$(my_position) || mine=0
    timeout 2 "${REDIS_PYTHON:-python3}" "$HOME_DIR/peers.py" "${REDIS_SERVICE:-redis}" \
        2>/dev/null | while read -r host port; do
        [ "$host" = "${AUTOPILOT_REDIS_IP:-}" ] && [ "$port" = "$PORT" ] && continue
        theirs=$(timeout 0.5 redis-cli -h "$host" -p "$port" info replication 2>/dev/null |
            tr -d '\r')
        case "$theirs" in *role:slave*) ;; *) continue ;; esac  # masters are not candidates
        off=$(echo "$theirs" | sed -n 's/^master_repl_offset://p')
        case "$off" in '' | *[!0-9]*) continue ;; esac
        if [ "$off" -gt $((mine + $1)) ]; then
            echo "$host:$port (offset $off > $mine + $1)"
            break
        fi
    done
}

promote() {
    # Candidacy (the election's `position`) already lets the most recent replica run first;
    # this re-check at promotion time catches a peer whose candidacy was not seen. No-loss
    # mode: any write ahead of us may be acknowledged (WAIT 1); async: REDIS_MAX_LAG bytes.
    if [ "${REDIS_PROMOTE_MOST_RECENT:-1}" = 1 ]; then
        if [ "$OPEN" = 1 ]; then slack=$PING_BYTES; else slack=${REDIS_MAX_LAG:-1048576}; fi
        if [ "$slack" -gt 0 ]; then
            ahead=$(peer_ahead "$slack")
            if [ -n "$ahead" ]; then log "not promoting: $ahead is ahead"; exit 1; fi
        fi
    fi
    # one redis-cli for the three commands: the write gap of a hand-over is mostly this hook
    out=$(printf 'REPLICAOF NO ONE\nCONFIG SET min-replicas-to-write %s\nROLE\n' "$OPEN" |
        cli 2>&1) || exit 1
    case "$out" in OK*OK*master*) ;; *) log "promote failed: $out"; exit 1 ;; esac
    set_state primary "$EPOCH"
    log "promoted (min-replicas-to-write $OPEN, epoch $EPOCH)"
}

identity() {
    # the data incarnation: a restarted redis-server has a new run_id (and, having loaded
    # an AOF or nothing, a new replid); a node that full-synced from another has a new replid
    info=$(cli info 2>/dev/null | tr -d '\r') || exit 1
    run_id=$(echo "$info" | sed -n 's/^run_id://p')
    replid=$(echo "$info" | sed -n 's/^master_replid://p')
    [ -n "$run_id" ] && [ -n "$replid" ] || exit 1
    echo "$run_id:$replid"
}

position() {
    # candidacy: how far our data goes; not a candidate (exit 1) if redis cannot tell, is
    # still loading its data, or REDIS_NOFAILOVER=1
    [ "${REDIS_NOFAILOVER:-0}" = 1 ] && { echo "nofailover" >&2; exit 1; }
    [ "$(info_field loading 2>/dev/null)" = 1 ] && { echo "loading" >&2; exit 1; }
    my_position || { echo "redis does not answer" >&2; exit 1; }
}

detach() {
    # the lock left the primary we followed: stop taking its stream now, before anyone is
    # promoted, so it cannot get a write acknowledged (WAIT 1) by us any more
    [ "$(state_role)" = primary ] && exit 0  # promoted after this hook started: stale
    fence
    set_state replica "$(state_epoch)"
    log "detached (offset $(my_position))"
}

demote() {
    fence
    set_state replica "$(state_epoch)"
    log "demoted: fenced"
    follow_leader
}

follow() {
    [ "${AUTOPILOT_ROLE:-}" = replica ] || exit 0
    leader_is_me && exit 0
    converge
}

case "${1:-}" in
run) run ;;
health) health ;;
identity) identity ;;
position) position ;;
detach) locked detach-locked ;;
detach-locked) detach ;;
promote) locked promote-locked ;;
demote) fence; locked demote-locked ;;  # fencing first: it is always safe
follow) wait_redis; locked follow-locked ;;
promote-locked) promote ;;
demote-locked) demote ;;
follow-locked) follow ;;
converge) converge ;;
*) echo "usage: $0 run|health|identity|position|detach|promote|demote|follow" >&2; exit 2 ;;
esac
