#!/usr/bin/env bash
# Start a Docker engine on this machine if none answers yet (idempotent).
#
# These machines run as root without systemd, so dockerd is started directly in the background
# with `--iptables=false`, logging to /tmp/dockerd.log. Installs Debian's `docker.io` first when
# `dockerd` is missing.
set -euo pipefail

LOG=/tmp/dockerd.log
WAIT_S=60

if docker info >/dev/null 2>&1; then
    echo "docker: engine already answering"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
    echo "docker: dockerd missing, installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
fi

# A dockerd may already be starting (a previous run of this script); only start one if none runs.
if ! pgrep -x dockerd >/dev/null 2>&1; then
    # A stale pid file from a killed dockerd makes the next one refuse to start.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    echo "docker: starting dockerd (log: $LOG)"
    # setsid: its own session, so stopping the caller's process group leaves the engine running.
    setsid nohup dockerd --iptables=false >"$LOG" 2>&1 </dev/null &
fi

for _ in $(seq 1 "$WAIT_S"); do
    if docker info >/dev/null 2>&1; then
        echo "docker: engine up ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
        exit 0
    fi
    sleep 1
done

echo "docker: the engine did not answer within ${WAIT_S}s; last lines of $LOG:" >&2
tail -n 30 "$LOG" >&2 || true
exit 1
