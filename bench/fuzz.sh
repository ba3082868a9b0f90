#!/usr/bin/env bash
# Mutation fuzzing with counts: every class of input from outside — plans, envelopes, engine SSE
# and NDJSON streams, Ollama JSON replies, Docker stats JSON, GGUF headers — at FUZZ_CASES inputs
# each (default 10,000), through the real parsers and clients (testkit::mutate; the HTTP classes
# go over real loopback HTTP). Prints one row per class and exits non-zero on any panic or when a
# class ran fewer inputs than asked.
#   bench/fuzz.sh                 FUZZ_CASES=10000 (about 10 minutes on 2 cores, debug build)
#   FUZZ_CASES=500 bench/fuzz.sh  a quick pass
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
export FUZZ_CASES=${FUZZ_CASES:-10000}
export PATH="$PWD/.venv/bin:$PATH"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
status=0
$CARGO test --quiet -p threadcycle-protocol -p threadcycle-reader -p threadcycle-host --test fuzz_counts \
    -- --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
secs=$(( $(date +%s) - start ))
echo "| input class | inputs | accepted | refused with an error | panics |"
echo "|---|---:|---:|---:|---:|"
grep -o 'FUZZ class=.*' "$log" | sed -E 's/FUZZ class=([^ ]+) inputs=([0-9]+) accepted=([0-9]+) refused=([0-9]+) panics=([0-9]+)/| \1 | \2 | \3 | \4 | \5 |/'
classes=$(grep -c 'FUZZ class=' "$log" || true)
total=$(grep -o 'inputs=[0-9]*' "$log" | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
short=$(grep -o 'inputs=[0-9]*' "$log" | cut -d= -f2 | awk -v n="$FUZZ_CASES" '$1 < n' | wc -l)
panics=$(grep -o 'panics=[0-9]*' "$log" | cut -d= -f2 | awk '{s+=$1} END {print s+0}')
echo
echo "$classes classes, $total inputs, $panics panics, ${secs} s (FUZZ_CASES=$FUZZ_CASES)"
if [ "$status" != 0 ] || [ "$short" != 0 ] || [ "${panics:-1}" != 0 ] || [ "$classes" -lt 10 ]; then
    echo "fuzz: FAILED (cargo exit $status, $short classes short of $FUZZ_CASES, $panics panics); log:" >&2
    tail -n 60 "$log" >&2
    exit 1
fi
