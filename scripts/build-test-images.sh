#!/usr/bin/env bash
# Build the local test images FROM scratch (no image registry is reachable from these machines).
#
#   scripts/build-test-images.sh [all|crasher|llama-server]     (default: all)
#
#  - threadcycle/crasher:test       busybox (Debian's busybox-static) whose default command prints
#                                   a few log lines and exits 3; tests override the command.
#  - threadcycle/llama-server:test  llama.cpp's llama-server ($LLAMA_SERVER, else `llama-server`
#                                   on PATH, else .venv/bin/llama-server) plus every library `ldd`
#                                   lists and the dynamic loader, copied at their own paths.
#
# Idempotent and quick: each image carries a label with the sha256 of its inputs and is rebuilt
# only when they change. Needs a running engine (scripts/start-dockerd.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGES="$ROOT/tests/images"
WHAT="${1:-all}"
PROG=build-test-images
# shellcheck source=lib/images.sh
. "$ROOT/scripts/lib/images.sh"

docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/start-dockerd.sh first"

build_crasher() {
    local tag=threadcycle/crasher:test
    local bb
    bb="$(busybox_static)"
    local sha
    sha="$(cat "$bb" "$IMAGES/crasher/Dockerfile" "$IMAGES/crasher/crash.sh" | sha256sum | cut -d' ' -f1)"
    if image_current "$tag" "$sha"; then
        echo "build-test-images: $tag is up to date"
        return
    fi
    local ctx
    ctx="$(mktemp -d)"
    cp "$IMAGES/crasher/Dockerfile" "$IMAGES/crasher/crash.sh" "$ctx/"
    cp -L "$bb" "$ctx/busybox"
    build "$tag" "$sha" "$ctx"
    rm -rf "$ctx"
}

# find_llama_server: print the path of the llama-server ELF binary.
find_llama_server() {
    local cand=""
    if [ -n "${LLAMA_SERVER:-}" ]; then
        cand="$LLAMA_SERVER"
    elif command -v llama-server >/dev/null 2>&1; then
        cand="$(command -v llama-server)"
    elif [ -e "$ROOT/.venv/bin/llama-server" ]; then
        cand="$ROOT/.venv/bin/llama-server"
    else
        die "no llama-server binary: set LLAMA_SERVER, put llama-server on PATH, or finish the pip build into .venv (log: /tmp/llama-build.log)"
    fi
    cand="$(readlink -f "$cand")"
    # pip may install a Python launcher rather than the binary: look for the ELF beside it.
    if ! head -c 4 "$cand" | grep -q 'ELF'; then
        local elf
        elf="$(find "$ROOT/.venv/lib" -type f -name 'llama-server' 2>/dev/null \
            | while read -r f; do head -c 4 "$f" | grep -q 'ELF' && echo "$f"; done | head -n1)"
        [ -n "$elf" ] || die "$cand is not an ELF binary and no llama-server ELF was found under .venv/lib; set LLAMA_SERVER"
        cand="$elf"
    fi
    echo "$cand"
}

build_llama_server() {
    local tag=threadcycle/llama-server:test
    local bin
    bin="$(find_llama_server)"
    local libs
    libs="$(ldd "$bin" | awk '/=>/ { if ($3 ~ /^\//) print $3; next } $1 ~ /^\// { print $1 }')"
    if ldd "$bin" | grep -q 'not found'; then
        ldd "$bin" >&2
        die "$bin needs libraries that are not installed here"
    fi
    local sha
    # shellcheck disable=SC2086
    sha="$(cat "$bin" $libs "$IMAGES/llama-server/Dockerfile" | sha256sum | cut -d' ' -f1)"
    if image_current "$tag" "$sha"; then
        echo "build-test-images: $tag is up to date"
        return
    fi
    local ctx
    ctx="$(mktemp -d)"
    cp "$IMAGES/llama-server/Dockerfile" "$ctx/"
    mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/usr/local/lib" "$ctx/rootfs/tmp"
    cp -L "$bin" "$ctx/rootfs/usr/local/bin/llama-server"
    # Shared libraries sitting beside the binary (if any) are found through LD_LIBRARY_PATH.
    find "$(dirname "$bin")" -maxdepth 1 -name '*.so*' -exec cp -L {} "$ctx/rootfs/usr/local/lib/" \;
    echo "build-test-images: $bin needs:"
    for lib in $libs; do
        echo "  $lib"
        mkdir -p "$ctx/rootfs$(dirname "$lib")"
        cp -L "$lib" "$ctx/rootfs$lib"
    done
    build "$tag" "$sha" "$ctx"
    rm -rf "$ctx"
}

case "$WHAT" in
    all) build_crasher; build_llama_server ;;
    crasher) build_crasher ;;
    llama-server) build_llama_server ;;
    *) die "unknown image '$WHAT' (all|crasher|llama-server)" ;;
esac
