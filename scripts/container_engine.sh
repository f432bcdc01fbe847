#!/usr/bin/env bash
# Bring up a Docker-compatible container engine on this machine: rootful Podman
# serving the Docker API on a unix socket, for the compose stack test in CI.
#
# Idempotent and safe to call any number of times: installs what is missing
# (podman, docker-compose v1, debootstrap, runc) from Debian's apt, writes the
# containers.conf these machines need, and starts `podman system service` only
# when the socket does not answer already.
#
# stdout carries only shell exports, everything else goes to stderr, so use:
#     eval "$(scripts/container_engine.sh)"
#     docker ps            # talks to Podman
#     docker-compose ps
#
# Podman without systemd never runs container healthchecks by itself (it asks
# systemd for timers), so compose's `condition: service_healthy` would wait
# forever.  This script therefore also keeps a small "health pump" running that
# calls `podman healthcheck run` for each running container at its configured
# interval: the same semantics (start_period, retries) as Docker's own checks.
#
# Knobs: ETL_ENGINE_DIR (socket, conf, logs, pids; default /run/etl_assets-engine)
#        ETL_ENGINE_STOP=1 scripts/container_engine.sh  -> stop what it started.
set -euo pipefail

ENGINE_DIR=${ETL_ENGINE_DIR:-/run/etl_assets-engine}
SOCK="$ENGINE_DIR/podman.sock"
CONF="$ENGINE_DIR/containers.conf"
PIDFILE="$ENGINE_DIR/service.pid"
LOG="$ENGINE_DIR/service.log"
PUMP_PIDFILE="$ENGINE_DIR/health-pump.pid"
PUMP_LOG="$ENGINE_DIR/health-pump.log"
RUNC=/usr/sbin/runc
SELF="$(readlink -f "$0")"

log() { echo "[container_engine] $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "must run as root (rootful Podman)"; exit 1
fi
mkdir -p "$ENGINE_DIR"

# alive PIDFILE PATTERN: the recorded process still runs and is what we started
# (a recycled pid of some other program does not count).
alive() {
    [ -s "$1" ] || return 1
    local pid; pid="$(cat "$1")"
    kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}

# cwd_gone PIDFILE: the recorded process runs in a directory since deleted (the checkout it was
# started from, say). Such a service still answers pings but starts no container: runc fails
# with "write child: broken pipe".
cwd_gone() {
    [ -s "$1" ] && readlink "/proc/$(cat "$1")/cwd" 2>/dev/null | grep -q ' (deleted)$'
}

# Internal mode: the health pump loop (started below, detached).
if [ "${1:-}" = --health-pump ]; then
    export CONTAINERS_CONF="$CONF"
    declare -A last_run=() running=()
    while true; do
        now=$(date +%s)
        ids="$(podman ps -q 2>/dev/null || true)"
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            podman inspect --format '{{.ID}} {{if .Config.Healthcheck}}{{.Config.Healthcheck.Interval.Seconds}}{{else}}-{{end}}' \
                $ids 2>/dev/null | while read -r id interval; do echo "$id $interval"; done >"$ENGINE_DIR/.pump.list" || true
            while read -r id interval; do
                [ "$interval" = - ] && continue
                interval=${interval%%.*}
                [ -n "$interval" ] && [ "$interval" -gt 0 ] 2>/dev/null || interval=30
                if [ -n "${running[$id]:-}" ] && kill -0 "${running[$id]}" 2>/dev/null; then
                    continue
                fi
                if [ $((now - ${last_run[$id]:-0})) -ge "$interval" ]; then
                    last_run[$id]=$now
                    podman --runtime "$RUNC" healthcheck run "$id" >/dev/null 2>&1 &
                    running[$id]=$!
                fi
            done <"$ENGINE_DIR/.pump.list"
        fi
        sleep 1
    done
fi

if [ "${ETL_ENGINE_STOP:-0}" = 1 ]; then
    for pf in "$PUMP_PIDFILE" "$PIDFILE"; do
        if alive "$pf" "health-pump\|system service"; then
            kill -- "-$(cat "$pf")" 2>/dev/null || kill "$(cat "$pf")" 2>/dev/null || true
            log "stopped pid $(cat "$pf") ($(basename "$pf" .pid))"
        fi
        rm -f "$pf"
    done
    rm -f "$SOCK"
    exit 0
fi

# --- 1. packages -------------------------------------------------------------
missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[ -x "$RUNC" ] || missing+=(runc)
# The init Podman runs as PID 1 for compose's `init: true`; a Recommends of podman that
# machines installing without recommends do not get.
[ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    for attempt in 1 2 3; do
        if apt-get update -qq >&2 && apt-get install -y -qq "${missing[@]}" >&2; then
            break
        fi
        [ "$attempt" = 3 ] && { log "apt-get failed"; exit 1; }
        sleep $((attempt * 5))
    done
fi
if ! command -v docker >/dev/null 2>&1; then
    # The docker CLI is preinstalled on these machines; Debian's docker.io
    # package brings one elsewhere (its daemon is never started).
    log "no docker CLI: installing Debian's docker-cli"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-cli >&2 \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
fi

# --- 2. containers.conf --------------------------------------------------------
# RLIMIT_NOFILE cannot be raised in this sandbox, and cgroup v1 hybrid mode needs
# the cgroupfs manager (no systemd).  runc instead of crun for the same reason.
desired_conf='[containers]
default_ulimits = []

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"

[engine.runtimes]
runc = ["/usr/sbin/runc"]
'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$(printf '%s' "$desired_conf")" ]; then
    printf '%s' "$desired_conf" >"$CONF"
    log "wrote $CONF"
fi
export CONTAINERS_CONF="$CONF"

# --- 3. API service ------------------------------------------------------------
ping_engine() {
    [ -S "$SOCK" ] && curl -sf --max-time 5 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}

# What we start runs from the engine's own directory, which outlives any checkout.
cd "$ENGINE_DIR"
if ping_engine && ! cwd_gone "$PIDFILE"; then
    log "podman service already answering on $SOCK"
else
    if alive "$PIDFILE" "system service"; then
        log "stale service pid $(cat "$PIDFILE") (not answering, or its directory deleted); stopping it"
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$SOCK"
    log "starting podman system service on unix://$SOCK"
    setsid nohup podman --runtime "$RUNC" system service --time=0 "unix://$SOCK" \
        >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 60); do
        ping_engine && break
        sleep 0.5
    done
    if ! ping_engine; then
        log "podman service did not come up; last log lines:"
        tail -n 30 "$LOG" >&2 || true
        exit 1
    fi
    log "podman service up (pid $(cat "$PIDFILE"))"
fi
# The one container that holds the socket (docker_proxy, a non-root HAProxy)
# reaches it through its group: compose passes DOCKER_SOCKET_GID as a group_add.
# A group of its own, never root's: group 0 would give that container more
# than the socket.
getent group docker >/dev/null || groupadd --system docker
chgrp docker "$SOCK"
chmod 0660 "$SOCK"

if alive "$PUMP_PIDFILE" "health-pump" && ! cwd_gone "$PUMP_PIDFILE"; then
    log "health pump already running (pid $(cat "$PUMP_PIDFILE"))"
else
    if alive "$PUMP_PIDFILE" "health-pump"; then
        kill "$(cat "$PUMP_PIDFILE")" 2>/dev/null || true
        log "stopped health pump pid $(cat "$PUMP_PIDFILE") (its directory deleted)"
    fi
    setsid nohup bash "$SELF" --health-pump >>"$PUMP_LOG" 2>&1 </dev/null &
    echo $! >"$PUMP_PIDFILE"
    log "health pump started (pid $(cat "$PUMP_PIDFILE"))"
fi

echo "export DOCKER_HOST=unix://$SOCK"
echo "export CONTAINERS_CONF=$CONF"
echo "export DOCKER_SOCKET=$SOCK"
echo "export DOCKER_SOCKET_GID=$(stat -c %g "$SOCK")"
