#!/usr/bin/env bash
# For a session lent a GPU machine: exercise the NVML path for real and print what it reads.
#   bench/gpu-check.sh            (needs a built workspace; ~1 minute)
# Prints: nvidia-smi's view, the Reader's GPU checks (name, VRAM, driver, memory bandwidth from
# NVML for the decode roofline — an H100 SXM should read about 3352 GB/s, an RTX 4090 1008 GB/s —
# idle temperature over 3 readings, and the RAM bandwidth the Reader measured), and the telemetry sampler's cost and readings at 1 Hz and 10 Hz for 10 s each
# while a small CUDA-free load keeps the CPU busy (the GPU figures are whatever the card does).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,temperature.gpu,power.draw,driver_version,clocks.max.memory --format=csv
cargo build -q 2>/dev/null || cargo build
./target/debug/threadcycle plan check plans/demo.toml | sed -n '/host checks/,/fit on/p'
SAMPLER_BENCH_SECS=10 cargo bench -q -p threadcycle-host --bench sampler
