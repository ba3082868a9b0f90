#!/usr/bin/env bash
# What `make demo` and `make test` need before they start building, checked in seconds, each
# missing part named with how to get it (rather than a compiler error twenty minutes in).
#   scripts/check-prereqs.sh demo|test
# LLAMA_SERVER (or a llama-server on PATH) means llama.cpp is not built, so no C/C++ toolchain
# is needed for it.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-demo}
missing=0
miss() { printf 'missing: %s\n' "$*" >&2; missing=1; }

# Rust: the workspace's rust-version, from Cargo.toml.
need_rust=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
if ! command -v cargo >/dev/null 2>&1 || ! command -v rustc >/dev/null 2>&1; then
    miss "Rust $need_rust or newer (cargo and rustc): install it with rustup, https://rustup.rs"
else
    have_rust=$(rustc --version | awk '{print $2}')
    if [ "$(printf '%s\n%s\n' "$need_rust" "${have_rust%%-*}" | sort -V | head -n1)" != "$need_rust" ]; then
        miss "Rust $need_rust or newer: this rustc is $have_rust (distribution packages are often older; use rustup: \`rustup update stable\`)"
    fi
fi

# Python 3 with venv and ensurepip (Debian/Ubuntu split them into python3-venv).
if ! command -v python3 >/dev/null 2>&1; then
    miss "python3 (3.9 or newer): apt-get install python3 python3-venv"
elif ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 9))' 2>/dev/null; then
    miss "python3 3.9+ with venv and ensurepip ($(python3 --version 2>&1)): apt-get install python3-venv"
fi

# A C/C++ toolchain: only to build llama.cpp when no llama-server is given or found.
llama=${LLAMA_SERVER:-}
[ -n "$llama" ] || [ -e .venv/bin/llama-server ] || llama=$(command -v llama-server 2>/dev/null || true)
if [ -z "$llama" ] && [ ! -e .venv/bin/llama-server ]; then
    for t in cc c++ make; do
        command -v "$t" >/dev/null 2>&1 || miss "$t, to build llama.cpp (no llama-server on PATH or in LLAMA_SERVER): apt-get install build-essential"
    done
fi

# make test installs what is missing with apt-get: that needs root or password-less sudo.
if [ "$what" = test ]; then
    # The tests build the NVML test double (testkit/nvml-double) with the machine's C compiler.
    command -v "${CC:-cc}" >/dev/null 2>&1 || miss "${CC:-cc}, to build the NVML test double for the tests: apt-get install build-essential"
    needs_apt=()
    command -v dockerd >/dev/null 2>&1 || needs_apt+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || needs_apt+=(docker-compose)
    [ -x /usr/bin/chromium ] || needs_apt+=(chromium)
    command -v prometheus >/dev/null 2>&1 || needs_apt+=(prometheus)
    if [ ${#needs_apt[@]} -gt 0 ] && [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
        miss "root or password-less sudo, to apt-get install ${needs_apt[*]} (or install them yourself first)"
    fi
    if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1 && [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
        miss "a running Docker engine this user may use (or root, so the tests can start dockerd)"
    fi
fi

if [ "$missing" = 1 ]; then
    echo "make $what: install the parts above, then run it again (README: Prerequisites)" >&2
    exit 1
fi
