#!/usr/bin/env bash
# End-to-end tests of the images and docker-compose.yml on a real Docker engine.
# Called by .ci/run (as root, on a Debian 12 machine with no registry access):
#   1. installs Debian's Docker engine, docker-compose 1.29 and mmdebstrap if missing;
#   2. starts a private dockerd (its own socket, data and exec roots) unless DOCKER_HOST
#      already points at a live engine, and stops it on exit;
#   3. builds the base image `debian:bookworm-slim` with mmdebstrap (nothing can be pulled)
#      and the wheels of this checkout (images/base/build.sh);
#   4. builds all images with docker-compose (legacy builder) and runs tests/e2e -m e2e;
#   5. prints the timings of each step and the figures the tests measured.
# Env: AUTOPILOT_E2E_STATE (default /var/lib/autopilot-e2e: engine data kept between runs,
# so later runs reuse the base image and layer cache).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

STATE=${AUTOPILOT_E2E_STATE:-/var/lib/autopilot-e2e}
RUNDIR=/run/autopilot-e2e
SOCK=$RUNDIR/docker.sock
REPORT=$(mktemp /tmp/autopilot-e2e-report.XXXXXX.json)
started_dockerd=""
t_start=$(date +%s)
timings=()

now_ms() { date +%s%3N; }
step_start() { step_name=$1; step_t0=$(now_ms); echo "== e2e: $1"; }
step_end() {
    local ms=$(( $(now_ms) - step_t0 ))
    timings+=("$(printf '%-28s %6d.%03d s' "$step_name" $((ms / 1000)) $((ms % 1000)))")
}

stop_dockerd() {
    if [ -n "$started_dockerd" ] && kill -0 "$started_dockerd" 2>/dev/null; then
        echo "== e2e: stopping dockerd (pid $started_dockerd)"
        kill -TERM "$started_dockerd"
        for _ in $(seq 1 60); do
            kill -0 "$started_dockerd" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$started_dockerd" 2>/dev/null && kill -KILL "$started_dockerd" || true
    fi
}

report() {
    local rc=$?
    stop_dockerd
    echo "== e2e: timings"
    for line in "${timings[@]}"; do echo "   $line"; done
    if [ -s "$REPORT" ]; then
        echo "== e2e: figures measured by the tests (seconds)"
        sed 's/^/   /' "$REPORT"
    fi
    rm -f "$REPORT"
    echo "== e2e: done in $(( $(date +%s) - t_start ))s (exit $rc)"
    exit $rc
}
trap report EXIT

step_start "install engine"
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
step_end

step_start "start dockerd"
if [ -n "${DOCKER_HOST:-}" ] && docker version >/dev/null 2>&1; then
    echo "   using the running engine at $DOCKER_HOST"
else
    mkdir -p "$STATE/docker" "$RUNDIR"
    dockerd --data-root "$STATE/docker" --exec-root "$RUNDIR/exec" -H "unix://$SOCK" \
        --pidfile "$RUNDIR/dockerd.pid" >"$STATE/dockerd.log" 2>&1 &
    started_dockerd=$!
    export DOCKER_HOST="unix://$SOCK"
    for _ in $(seq 1 120); do
        docker version >/dev/null 2>&1 && break
        kill -0 "$started_dockerd" 2>/dev/null || { tail -20 "$STATE/dockerd.log"; exit 1; }
        sleep 0.5
    done
    docker version --format '   engine {{.Server.Version}} at '"$DOCKER_HOST"
fi
# containers left by an interrupted earlier run of these tests
stale=$(docker ps -a --filter "label=com.docker.compose.project" \
    --format '{{.ID}} {{.Label "com.docker.compose.project"}}' | awk '$2 ~ /^apshop/ {print $1}')
[ -z "$stale" ] || docker rm -f $stale >/dev/null
docker network prune -f >/dev/null
step_end

step_start "base image and wheels"
images/base/build.sh
step_end

step_start "build images"
# the polyglot shop (profile "socks") builds too: its e2e test (tests/e2e/test_socks.py) needs it
compose_files=docker-compose.yml
[ -f docker-compose.postgres.yml ] && compose_files=$compose_files:docker-compose.postgres.yml
COMPOSE_FILE=$compose_files COMPOSE_PROFILES=socks docker-compose -p apbuild build -q
step_end

step_start "pytest tests/e2e -m e2e"
set +e
AUTOPILOT_E2E_PREBUILT=1 AUTOPILOT_E2E_REPORT="$REPORT" \
    python3 -m pytest tests/e2e -m e2e -q -p no:cacheprovider -rs
rc=$?
set -e
step_end
exit $rc
