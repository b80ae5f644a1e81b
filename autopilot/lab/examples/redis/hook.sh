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
#
# Speed: promote, demote, detach and follow sit on the path of every failover and hand-over,
# so they start as few processes as they can (one redis-cli per round trip, INFO parsed by
# the shell, the lock taken on a descriptor of this shell rather than by a second shell).
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
I_role=""
# Positions (candidacy): how far this node's data goes. Data held in a live replication
# history (offset > 0) ranks above data restored from an AOF, which ranks by the offset its
# history had reached when a check last saw it live (redis starts an AOF-loaded node at a new
# replid, offset 0: the file itself carries no offset). So a node restarted from its AOF never
# beats a replica that kept following, while nodes that all restarted at once rank by the
# data they restored, not by service ID. The health check keeps "replid offset" of the live
# history in POSITION (only when it changed; a torn read counts as no record), replaced whole
# (a new file renamed over it): a node SIGKILLed while rewriting it in place kept an empty
# record and, restarted from its AOF, ranked as holding nothing.
POSITION="$DIR/position"
LIVE=1099511627776  # 2^40 bytes: added to a live history's offset

cli() { redis-cli -h "$HOST" -p "$PORT" "$@"; }

log() {
    # one line per hook action on stderr (autopilot logs it with its time) and, for the lab,
    # with a timestamp in a file (the `date` process only then)
    echo "redis-hook: ${AUTOPILOT_ROLE:-none} $*" >&2
    if [ -n "${REDIS_HOOK_LOG:-}" ]; then
        echo "$(date +%s.%N) ${AUTOPILOT_ROLE:-none} $*" >>"$REDIS_HOOK_LOG"
    fi
}

parse() {
    # INFO lines (and a CONFIG GET min-replicas-to-write reply) on stdin -> I_* variables,
    # by the shell itself: no sed or tr per field
    I_role="" I_host="" I_port="" I_link="" I_offset="" I_priority="" I_replid=""
    I_run_id="" I_loading="" I_fence="" I_pong=""
    prev=""
    while IFS=: read -r k v; do
        # INFO's lines end in CR LF: drop a trailing CR (no value we read ends otherwise
        # than in a letter or digit), without a $(printf '\r') process per hook
        case "$k" in *[!A-Za-z0-9_-]) k=${k%?} ;; esac
        case "$v" in *[!A-Za-z0-9._-]) v=${v%?} ;; esac
        case "$k" in
        PONG) I_pong=1 ;;
        role) I_role=$v ;;
        master_host) I_host=$v ;;
        master_port) I_port=$v ;;
        master_link_status) I_link=$v ;;
        master_repl_offset) I_offset=$v ;;
        slave_priority | replica_priority) I_priority=$v ;;
        master_replid) I_replid=$v ;;
        run_id) I_run_id=$v ;;
        loading) I_loading=$v ;;
        esac
        if [ "$prev" = min-replicas-to-write ]; then I_fence=$k; fi
        prev=$k
    done
}

my_info() {  # my_info [SECTION...]: INFO replication (and SECTIONs) of our redis into I_*
    out=$(for s in replication "$@"; do echo "INFO $s"; done | cli 2>/dev/null) || true
    parse <<EOF
$out
EOF
    [ -n "$I_role" ]
}

fence() {
    # writes first (effective at once), then detach: replica of nothing, data kept
    printf 'CONFIG SET min-replicas-to-write %s\nREPLICAOF %s\n%s\n' "$FENCE" "$NOWHERE" \
        "${fence_extra:-}" | cli >/dev/null 2>&1
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
    [ -n "$I_role" ] || my_info  # the caller's fresh INFO, else ours now
    if [ "$I_role" = slave ] && [ "$I_host" = "$addr" ] && [ "$I_port" = "$lport" ]; then
        return 0
    fi
    out=$(printf 'REPLICAOF %s %s\nCONFIG SET replica-priority 100\n' "$addr" "$lport" |
        cli 2>&1)
    log "replicaof $addr $lport: $(echo $out)"
}

alive() { kill -0 "$1" 2>/dev/null; }

ppid_now() {  # PPID_NOW: our parent now, read without starting a process
    PPID_NOW=0
    read -r _p1 _p2 _p3 PPID_NOW _p5 </proc/$$/stat 2>/dev/null || PPID_NOW=0
}

# The catalog's passing instances of our service, for promote's check: refreshed in the
# background by `run` every ~5 s, so a promotion does not wait for a Python start-up and an
# HTTP request (often most of a hand-over's write gap on a loaded machine).
PEERS="$DIR/peers"

refresh_peers() {
    timeout 2 "${REDIS_PYTHON:-python3}" "$HOME_DIR/peers.py" "${REDIS_SERVICE:-redis}" \
        >"$PEERS.tmp.$$" 2>/dev/null && mv "$PEERS.tmp.$$" "$PEERS"
    rm -f "$PEERS.tmp.$$"
}

run() {
    mkdir -p "$DIR"
    pidfile="$DIR/redis-server.pid"
    ppid_now
    parent=$PPID_NOW
    pid=""
    # whatever this node was before, the redis-server below is fenced and no transition has
    # been applied to it: "none" (written before it answers anyone). A primary whose redis
    # restarted thus fails its check (same epoch, role none), and the next decision of the
    # election (promote, or follow a leader of any epoch) is applied.
    read_state
    set_state none "$S_epoch"
    if [ -f "$pidfile" ]; then
        old=$(cat "$pidfile")
        if alive "$old" && tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q redis-server; then
            pid=$old
            fence
            cli config set replica-priority 100 >/dev/null 2>&1  # a candidate again
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
    trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
    ticks=20
    while alive "$pid"; do
        ppid_now
        if [ "$PPID_NOW" != "$parent" ]; then
            # the supervisor is gone: nobody renews our lease any more, so stop writes now
            fence
            log "supervisor $parent gone: fenced redis-server $pid and left it running"
            exit 0
        fi
        ticks=$((ticks + 1))
        if [ "$ticks" -ge 25 ]; then ticks=0; refresh_peers & fi  # every ~5 s
        sleep 0.2
    done
    wait "$pid" 2>/dev/null
    status=$?
    rm -f "$pidfile"
    exit "$status"
}

# The last transition a hook applied, as "ROLE EPOCH" in $DIR/autopilot-role (ROLE: none,
# primary, replica, detached; EPOCH: the election's epoch). Hooks and health checks are
# separate processes started with the environment of their moment, so one started just
# before a promotion still says AUTOPILOT_ROLE=replica: it must not act on that. Every
# state-changing hook holds $DIR/hook.lock and compares epochs first.
STATE="$DIR/autopilot-role"
EPOCH=${AUTOPILOT_LEADER_EPOCH:-0}
case "$EPOCH" in '' | *[!0-9]*) EPOCH=0 ;; esac

read_state() {
    S_role=none S_epoch=0
    if [ -f "$STATE" ]; then read -r S_role S_epoch <"$STATE" || true; fi
    case "$S_epoch" in '' | *[!0-9]*) S_epoch=0 ;; esac
    S_role=${S_role:-none}
}
set_state() { echo "$1 $2" >"$STATE.tmp" && mv "$STATE.tmp" "$STATE"; }

lock() {  # lock [-n]: hold $DIR/hook.lock until this process exits (-n: fail if busy)
    [ -d "$DIR" ] || mkdir -p "$DIR"
    exec 9>>"$DIR/hook.lock"
    if [ "${1:-}" = -n ]; then flock -n 9; else flock -w 5 9; fi
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
    # once, and a primary's failed check means a failover. One redis-cli per attempt.
    i=0
    while :; do
        out=$(printf 'PING\nINFO replication\nCONFIG GET min-replicas-to-write\n' | cli 2>&1)
        parse <<EOF
$out
EOF
        [ -n "$I_pong" ] && [ -n "$I_role" ] && break
        i=$((i + 1))
        if [ $i -ge "${REDIS_PING_TRIES:-5}" ]; then echo "ping: $(echo $out)"; exit 1; fi
        sleep 0.1
    done
    read_state
    case "${AUTOPILOT_ROLE:-}" in
    primary)
        if [ "$S_epoch" -ne "$EPOCH" ]; then
            # a promotion not applied yet, or this check predates a newer transition
            echo "transition in progress (epoch $EPOCH, applied $S_role $S_epoch)"; exit 0
        fi
        if [ "$I_role" = slave ] && [ "$I_priority" = 0 ]; then S_role=replica; fi  # demote
        case "$S_role" in
        primary) ;;
        replica | detached)
            # this check started before the step-down it now sees: failing it would only
            # invalidate the session (and impose a lock-delay) instead of a clean release
            echo "stepping down (epoch $EPOCH)"; exit 0 ;;
        *) echo "elected primary (epoch $EPOCH) but redis is $S_role"; exit 1 ;;
        esac
        if [ "$I_role" != master ]; then echo "elected primary but redis is $I_role"; exit 1; fi
        if [ "$I_fence" = "$FENCE" ]; then echo "elected primary but still fenced"; exit 1; fi
        if [ "${REDIS_FENCE_ON_CATALOG_LOSS:-1}" = 1 ] && ! catalog_reachable; then
            # our heartbeats cannot reach the catalog either: it will invalidate our session
            # after the check's TTL, sooner than the session TTL. Step down first.
            echo "elected primary but the catalog at $CATALOG is unreachable"; exit 1
        fi
        record_position
        echo "primary, offset $I_offset"
        ;;
    replica)
        # converge instead of failing: a replica of the wrong node is re-pointed, and a
        # replica of a dead primary stays healthy so that it can run for election
        link=$I_link
        if [ "$I_role" = slave ] && [ "$link" = up ]; then record_position; fi
        if may_follow && lock -n; then converge; fi
        if [ "$I_host $I_port" = "$NOWHERE" ]; then link=detached; fi
        echo "replica of ${AUTOPILOT_LEADER_ADDRESS:-?}:${AUTOPILOT_LEADER_PORT:-?}, link $link"
        ;;
    *)
        echo "up, no role yet ($I_role)"
        ;;
    esac
}

may_follow() {  # may a replica-role hook of our epoch act now? (reads the state)
    read_state
    case "$S_role" in
    none) return 0 ;;  # a fresh redis-server: follow whoever leads
    primary) return 1 ;;  # promoted after this process started: stale
    *) [ "$EPOCH" -ge "$S_epoch" ] ;;
    esac
}

converge() {  # under the lock: re-check, then fence and follow the leader of our epoch
    may_follow || return 0
    my_info || { wait_redis; my_info; }
    if [ "$I_role" = master ]; then fence; I_role=slave I_host=${NOWHERE% *} I_port=0; fi
    follow_leader
    if [ -n "${AUTOPILOT_LEADER_ADDRESS:-}" ]; then set_state replica "$EPOCH"; fi
}

survey_start() {
    # INFO replication of every peer in the list, all at once and in the background (a dead
    # one costs its timeout once); survey_collect waits for them. Read-only: promote starts
    # it before it takes the hook lock, so the two overlap (on a loaded machine every
    # process start on the way to opening writes costs tens of ms).
    followers=""
    tmp="$DIR/survey.$$"
    trap 'rm -f "$tmp".*' EXIT  # at the hook's end: an `rm` less before writes open
    cli info replication >"$tmp.me" 2>/dev/null &  # ours, in parallel with theirs
    # `run` refreshes the list every ~5 s; without one (run just started), ask the catalog
    [ -s "$PEERS" ] || refresh_peers
    [ -f "$PEERS" ] || : >"$PEERS"
    n=0
    while read -r host port; do
        [ -n "$port" ] || continue
        [ "$host" = "${AUTOPILOT_REDIS_IP:-}" ] && [ "$port" = "$PORT" ] && continue
        timeout 0.5 redis-cli -h "$host" -p "$port" info replication >"$tmp.$n" 2>/dev/null &
        echo "$host:$port" >"$tmp.$n.name"
        n=$((n + 1))
    done <"$PEERS"
}

survey_collect() {
    # Sets followers (candidates: replicas that are not a deposed primary, as
    # "host:port:offset" words) and mine (our own offset).
    wait
    parse <"$tmp.me"
    mine=${I_offset:-0}
    case "$mine" in '' | *[!0-9]*) mine=0 ;; esac
    j=0
    while [ "$j" -lt "$n" ]; do
        parse <"$tmp.$j"
        read -r name <"$tmp.$j.name"
        j=$((j + 1))
        [ "$I_role" = slave ] || continue  # masters are not candidates
        [ "$I_priority" = 0 ] && continue  # a deposed primary (demote)
        case "$I_offset" in '' | *[!0-9]*) continue ;; esac
        followers="$followers $name:$I_offset"
    done
}

ahead_of_us() {  # ahead_of_us SLACK: AHEAD = the first surveyed peer further than mine + SLACK
    # (a variable, not $(...) output: no subshell on the way to opening writes)
    AHEAD=""
    for f in $followers; do
        if [ "${f##*:}" -gt $((mine + $1)) ]; then
            AHEAD="${f%:*} (offset ${f##*:} > $mine + $1)"
            return
        fi
    done
}

repoint_followers() {
    # The replicas we surveyed follow us right away, in parallel: in no-loss mode a write
    # needs one of them (WAIT 1), and waiting for each one's own follow hook (the election
    # announces the promotion, each follower learns of it, starts the hook) is most of a
    # hand-over's write gap. Safe while our promote hook runs: the lease is ours (the
    # election kills this hook when it ends) and these are replicas, never a master.
    me=${AUTOPILOT_REDIS_IP:-}
    [ -n "$me" ] && [ -n "$followers" ] && [ "${REDIS_PROMOTE_REPOINTS:-1}" = 1 ] || return 0
    for f in $followers; do
        hp=${f%:*}
        timeout 0.5 redis-cli -h "${hp%:*}" -p "${hp##*:}" replicaof "$me" "$PORT" \
            >/dev/null 2>&1 &
    done
    wait
}

promote() {
    # Candidacy (the election's `position`) already lets the most recent replica run first;
    # this re-check at promotion time catches a peer whose candidacy was not seen. No-loss
    # mode: any write ahead of us may be acknowledged (WAIT 1); async: REDIS_MAX_LAG bytes.
    survey_start
    lock || exit 1
    survey_collect
    if [ "${REDIS_PROMOTE_MOST_RECENT:-1}" = 1 ]; then
        if [ "$OPEN" = 1 ]; then slack=$PING_BYTES; else slack=${REDIS_MAX_LAG:-1048576}; fi
        if [ "$slack" -gt 0 ]; then
            ahead_of_us "$slack"
            if [ -n "$AHEAD" ]; then log "not promoting: $AHEAD is ahead"; exit 1; fi
        fi
    fi
    # one redis-cli for every command: the write gap of a hand-over is mostly hooks
    out=$(printf 'REPLICAOF NO ONE\nCONFIG SET min-replicas-to-write %s\nCONFIG SET replica-priority 100\nROLE\n' \
        "$OPEN" | cli 2>&1) || exit 1
    case "$out" in OK*OK*OK*master*) ;; *) log "promote failed: $(echo $out)"; exit 1 ;; esac
    set_state primary "$EPOCH"
    repoint_followers
    log "promoted (min-replicas-to-write $OPEN, epoch $EPOCH; followers:${followers:- none})"
}

position_of() {  # from the I_* of INFO replication: P = this node's position, else fail
    P=""
    case "$I_offset" in '' | *[!0-9]*) return 1 ;; esac
    if [ "$I_offset" -gt 0 ]; then P=$((LIVE + I_offset)); return 0; fi
    P=0
    # offset 0: nothing yet, or data restored from an AOF whose history a check recorded
    [ "${REDIS_APPENDONLY:-0}" = 1 ] && [ -f "$POSITION" ] || return 0
    r_replid="" r_offset=""
    read -r r_replid r_offset <"$POSITION" 2>/dev/null || true
    case "$r_offset" in '' | *[!0-9]*) return 0 ;; esac
    [ "$r_replid" != "$I_replid" ] && [ "$r_offset" -lt "$LIVE" ] && P=$r_offset
    return 0
}

record_position() {  # health: the live history's replid and offset, when they changed
    case "$I_offset" in '' | *[!0-9]*) return 0 ;; esac
    [ "$I_offset" -gt 0 ] && [ -n "$I_replid" ] || return 0
    r_replid="" r_offset=""
    [ -f "$POSITION" ] && { read -r r_replid r_offset <"$POSITION" 2>/dev/null || true; }
    [ "$r_replid $r_offset" = "$I_replid $I_offset" ] && return 0
    echo "$I_replid $I_offset" >"$POSITION.tmp" && mv -f "$POSITION.tmp" "$POSITION"
}

identity() {
    # the data incarnation: a restarted redis-server has a new run_id (and, having loaded
    # an AOF or nothing, a new replid); a node that full-synced from another has a new replid
    my_info server || exit 1
    [ -n "$I_run_id" ] && [ -n "$I_replid" ] || exit 1
    echo "$I_run_id:$I_replid"
}

position() {
    # candidacy: how far our data goes; not a candidate (exit 1) if redis cannot tell, is
    # still loading its data, or REDIS_NOFAILOVER=1
    [ "${REDIS_NOFAILOVER:-0}" = 1 ] && { echo "nofailover" >&2; exit 1; }
    my_info persistence || { echo "redis does not answer" >&2; exit 1; }
    [ "$I_loading" = 1 ] && { echo "loading" >&2; exit 1; }
    position_of || { echo "no offset" >&2; exit 1; }
    echo "$P"
}

detach() {
    # the lock left the primary we followed: stop taking its stream now, before anyone is
    # promoted, so it cannot get a write acknowledged (WAIT 1) by us any more
    read_state
    [ "$S_role" = primary ] && exit 0  # promoted after this hook started: stale
    # fence (as fence() does) and read where our data stops, in one round trip: detached,
    # the offset no longer moves, so it is the position the candidacy round needs and the
    # election need not start the position hook too (`position=N`, the last line)
    out=$(printf 'CONFIG SET min-replicas-to-write %s\nREPLICAOF %s\nINFO replication\nINFO persistence\n' \
        "$FENCE" "$NOWHERE" | cli 2>/dev/null) || true
    parse <<EOF
$out
EOF
    # epoch + 1: a check or follow hook started while the deposed leader led (its epoch)
    # must not re-attach us to it; the next leader's epoch is higher
    set_state detached $((S_epoch + 1))
    log "detached"
    # the same rules as `position`: nothing when it would refuse (the hook then runs)
    [ "${REDIS_NOFAILOVER:-0}" = 1 ] || [ "$I_loading" = 1 ] && return 0
    position_of || return 0
    echo "position=$P"
}

demote() {
    # fenced and detached already (before the lock was taken), with replica-priority 0: it
    # marks the deposed primary, whose data beyond its replicas' was acknowledged by nobody
    # else (no-loss mode), so the others' promote checks neither wait for it nor re-point it
    read_state
    set_state replica "$S_epoch"
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
detach) lock && detach ;;
promote) promote ;;  # (takes the lock itself, once its survey is under way)
demote)
    # fencing first: it is always safe. replica-priority 0, set in the same round trip,
    # marks the deposed primary: a health check that started before the step-down (it still
    # says AUTOPILOT_ROLE=primary) sees it and does not fail the session meanwhile.
    fence_extra='CONFIG SET replica-priority 0'
    fence
    lock && demote
    ;;
follow) lock && follow ;;
*) echo "usage: $0 run|health|identity|position|detach|promote|demote|follow" >&2; exit 2 ;;
esac
