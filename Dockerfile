# One image for the five threadcycle agents and the operator CLI:
#   docker build -t threadcycle/agents:latest .
#   docker run --rm threadcycle/agents:latest agent main
#   docker run --rm threadcycle/agents:latest plan check plans/large-models.toml --host-profile hosts/rtx5070ti-32gb.toml
#
# The builder compiles the workspace exactly as locked; the runtime stage holds the binary, CA
# certificates, and the plans and host profiles. NVML (libnvidia-ml.so.1) is not in the image:
# the NVIDIA container toolkit mounts it into containers that reserve the GPU, and without it
# the agents say "no NVIDIA GPU" and carry on.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build --------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# ring (rustls) needs a C compiler; the slim Rust image ships gcc and libc6-dev.
COPY . .
# Plain RUN (no BuildKit cache mounts) so the legacy builder and docker-compose v1 build it too.
RUN cargo build --release --locked --bin threadcycle \
 && install -D -m 0755 target/release/threadcycle /out/threadcycle

# ---- runtime ------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# A fixed, unprivileged user. Reader and Writer reach the Docker socket through the socket's
# group (docker-compose.yml adds it with `group_add`).
RUN groupadd --system --gid 10001 threadcycle \
 && useradd --system --uid 10001 --gid threadcycle --home-dir /app --shell /usr/sbin/nologin threadcycle \
 && mkdir -p /app/docs-out /app/run \
 && chown -R threadcycle:threadcycle /app
COPY --from=builder /out/threadcycle /usr/local/bin/threadcycle
# The plans and host profiles, so `threadcycle start plans/large-models.toml` works in the image.
COPY --chown=threadcycle:threadcycle plans /app/plans
COPY --chown=threadcycle:threadcycle hosts /app/hosts
WORKDIR /app
ENV THREADCYCLE_OUT=/app/docs-out \
    THREADCYCLE_RUN_DIR=/app/run \
    NATS_URL=nats://nats:4222
USER threadcycle
ENTRYPOINT ["/usr/local/bin/threadcycle"]
CMD ["--help"]
