#!/usr/bin/env bash
# Prepare what the autopilot images build from, on a machine that cannot pull images:
#   1. the base image `debian:bookworm-slim`, made from Debian's packages with mmdebstrap
#      (skipped when the image exists: a machine that can pull needs nothing here);
#   2. the wheels of autopilot and its dependencies (plus redis-py for the shop app) in dist/,
#      (async-timeout: redis-py needs it on Debian's Python 3.11.2), built on the host because pip inside a build may fail TLS behind a re-signing proxy;
#   3. with the wheels, the image `autopilot/runtime:${SHOP_TAG:-dev}` (images/base/Dockerfile):
#      autopilot installed once in /opt/autopilot, which every image copies out of it.
# Usage: images/base/build.sh [--no-base] [--no-wheels]      (from anywhere; needs docker)
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
do_base=1 do_wheels=1
for arg in "$@"; do
    case $arg in
        --no-base) do_base=0 ;;
        --no-wheels) do_wheels=0 ;;
        *) echo "usage: $0 [--no-base] [--no-wheels]" >&2; exit 2 ;;
    esac
done

t0=$(date +%s%N)
elapsed() { local ms=$(( ($(date +%s%N) - t0) / 1000000 )); printf '%d.%03d' $((ms / 1000)) $((ms % 1000)); }

if [ "$do_base" = 1 ]; then
    if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        echo "base: $BASE_IMAGE already present"
    else
        command -v mmdebstrap >/dev/null || { echo "base: needs mmdebstrap (apt-get install -y mmdebstrap)" >&2; exit 1; }
        tmp=$(mktemp -d)
        trap 'rm -rf "$tmp"' EXIT
        echo "base: mmdebstrap bookworm (minbase) from $MIRROR"
        # like Docker's official slim image: no apt binary caches in layers, no docs/man
        # pages/locales (Dockerfiles' `apt-get install` layers stay small too)
        mmdebstrap --quiet --variant=minbase \
            --aptopt='Dir::Cache::pkgcache ""' --aptopt='Dir::Cache::srcpkgcache ""' \
            --dpkgopt='path-exclude=/usr/share/doc/*' \
            --dpkgopt='path-include=/usr/share/doc/*/copyright' \
            --dpkgopt='path-exclude=/usr/share/man/*' \
            --dpkgopt='path-exclude=/usr/share/locale/*' \
            --dpkgopt='path-exclude=/usr/share/info/*' \
            bookworm "$tmp/base.tar" "deb $MIRROR bookworm main"
        docker import "$tmp/base.tar" "$BASE_IMAGE" >/dev/null
        echo "base: imported as $BASE_IMAGE after $(elapsed)s"
    fi
fi

if [ "$do_wheels" = 1 ]; then
    # a clean build dir: setuptools would otherwise keep deleted modules in the wheel
    rm -rf build
    # redis-py for the shop app; async-timeout because redis-py wants it on Python < 3.11.3
    # (Debian bookworm has 3.11.2)
    # fixed timestamps make the wheel byte-identical while the sources are: Docker's layer
    # cache then skips the image's pip install step
    export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-315532800}
    log=$(mktemp)
    if ! python3 -m pip wheel --quiet --disable-pip-version-check --find-links dist/ . redis async-timeout \
            -w dist/ >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
    echo "wheels: $(ls dist/*.whl | wc -l) in dist/ after $(elapsed)s"
    # what every image copies /opt/autopilot from (their RUNTIME build argument)
    runtime=autopilot/runtime:${SHOP_TAG:-dev}
    docker build -q -f images/base/Dockerfile -t "$runtime" . >/dev/null
    echo "runtime: $runtime after $(elapsed)s"
fi
