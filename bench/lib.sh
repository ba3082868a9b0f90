# Shared by the bench scripts that drive the threadcycle binary (sourced, not run). The caller sets
# BENCH (its name, for messages and the work folder) and runs from the repository root.
#   ROOT, PATH (with .venv/bin), TC (THREADCYCLE, else target/debug/threadcycle, target/release
#   with RELEASE=1), OUT (OUT, else a new temporary folder), and `need FILE…`.
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
PROFILE=debug; [[ "${RELEASE:-0}" == 1 ]] && PROFILE=release
TC=${THREADCYCLE:-${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/threadcycle}
OUT=${OUT:-$(mktemp -d -t "tc-$BENCH-XXXXXX")}
mkdir -p "$OUT"

# need PATH_OR_EMPTY…: exits 2, naming what is missing, unless every argument is an existing file
# (pass `"$(command -v tool || echo tool)"` for a tool on PATH).
need() {
  local x
  for x in "$@"; do
    if [[ -z "$x" || ! -e "$x" ]]; then
      echo "$BENCH: missing ${x:-a tool}; run \`make deps build\`" >&2
      exit 2
    fi
  done
}
