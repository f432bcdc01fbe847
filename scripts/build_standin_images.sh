#!/usr/bin/env bash
# Build stand-ins for the official base images on a machine that cannot pull
# from any registry (the CI machines reach only package registries):
#
#   python:3.11-slim, python:3.11-slim-bookworm   Debian bookworm + Debian's Python 3.11
#   etl-standin/mysql:8.4                          Debian's MariaDB behind the mysql image's entrypoint contract
#   etl-standin/postgres:16                        Debian's PostgreSQL behind the postgres image's entrypoint contract
#   etl-standin/haproxy:3.0                        Debian's HAProxy with the haproxy image's contract (docker_proxy)
#
# Each stand-in is a debootstrap'ed root filesystem (cached as a tarball under
# $ETL_STANDIN_CACHE, default /var/cache/etl_assets) imported into the engine,
# plus a small Dockerfile under docker/standins/<name>/ (entrypoint, env; built with docker/standins
# as the context so the entrypoints share docker/standins/common/).
# A second run reuses the tarballs (and skips images already present with the
# same recipe key), so it takes seconds.  Needs root and DOCKER_HOST pointing at
# the engine (scripts/container_engine.sh).
#
# Usage: scripts/build_standin_images.sh [python] [mysql] [postgres] [haproxy]   (default: all)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ETL_STANDIN_CACHE:-/var/cache/etl_assets}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
# Bump to force every rootfs to be rebuilt.
RECIPE_VERSION=2

log() { echo "[standins $(date +%H:%M:%S)] $*" >&2; }
now() { date +%s; }

[ "$(id -u)" = 0 ] || { log "must run as root (debootstrap, chroot)"; exit 1; }
command -v debootstrap >/dev/null || { log "debootstrap missing: run scripts/container_engine.sh first"; exit 1; }
docker version >/dev/null 2>&1 || { log "no engine at DOCKER_HOST=${DOCKER_HOST:-}: eval \"\$(scripts/container_engine.sh)\" first"; exit 1; }

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/.lock"
flock 9

declare -A PACKAGES=(
    [python]="python3 python3-venv python3-pip ca-certificates"
    [mysql]="mariadb-server mariadb-client ca-certificates"
    [postgres]="postgresql postgresql-client ca-certificates"
    [haproxy]="haproxy ca-certificates"
)
declare -A TAGS=(
    [python]="python:3.11-slim python:3.11-slim-bookworm"
    [mysql]="etl-standin/mysql:8.4"
    [postgres]="etl-standin/postgres:16"
    [haproxy]="etl-standin/haproxy:3.0"
)

key_of() {  # recipe key of a rootfs: what goes into it
    printf '%s\n' "$RECIPE_VERSION" "$SUITE" "$MIRROR" "${PACKAGES[$1]}" | sha256sum | cut -c1-12
}

# --- minbase rootfs, shared by every stand-in ---------------------------------
base_tar() {
    local tar="$CACHE/rootfs-base-$SUITE-r$RECIPE_VERSION.tar"
    if [ ! -s "$tar" ]; then
        local t0 dir
        t0=$(now)
        dir="$(mktemp -d "$CACHE/base.XXXXXX")"
        log "debootstrap --variant=minbase $SUITE from $MIRROR"
        debootstrap --variant=minbase --cache-dir="$CACHE/debs" "$SUITE" "$dir" "$MIRROR" \
            >"$CACHE/debootstrap.log" 2>&1 || { tail -n 40 "$CACHE/debootstrap.log" >&2; rm -rf "$dir"; exit 1; }
        rm -rf "$dir/var/cache/apt/archives"/*.deb "$dir/var/lib/apt/lists"/*
        cat >"$dir/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY_MIRROR $SUITE-security main
EOF
        tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
        rm -rf "$dir"
        log "base rootfs cached ($(du -h "$tar" | cut -f1), $(( $(now) - t0 ))s)"
    fi
    echo "$tar"
}

chroot_run() {  # chroot_run DIR CMD...: with /proc, /dev and DNS, services never started
    local dir="$1"; shift
    mount -t proc proc "$dir/proc"
    mount --bind /dev "$dir/dev"
    mount --bind /dev/pts "$dir/dev/pts" 2>/dev/null || true
    local rc=0
    chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@" || rc=$?
    umount "$dir/dev/pts" 2>/dev/null || true
    umount "$dir/dev" "$dir/proc"
    return $rc
}

rootfs_tar() {  # rootfs_tar NAME -> path of the cached tarball for that stand-in
    local name="$1" key tar
    key="$(key_of "$name")"
    tar="$CACHE/rootfs-$name-$key.tar"
    if [ -s "$tar" ]; then echo "$tar"; return; fi

    local t0 dir base
    t0=$(now)
    base="$(base_tar)"
    dir="$(mktemp -d "$CACHE/$name.XXXXXX")"
    # shellcheck disable=SC2064
    trap "umount '$dir/dev/pts' '$dir/dev' '$dir/proc' 2>/dev/null; rm -rf '$dir'" EXIT
    tar -C "$dir" -xf "$base"
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    # The host's CA bundle: it is what reaches the package index from here.
    mkdir -p "$dir/etc/ssl/certs"
    printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
    chmod 0755 "$dir/usr/sbin/policy-rc.d"
    if [ "$name" = postgres ]; then  # no cluster at install time: the entrypoint makes one
        mkdir -p "$dir/etc/postgresql-common/createcluster.d"
        echo "create_main_cluster = false" >"$dir/etc/postgresql-common/createcluster.d/no-main.conf"
    fi
    printf 'path-exclude=/usr/share/doc/*\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\npath-exclude=/usr/share/locale/*\npath-include=/usr/share/doc/*/copyright\n' \
        >"$dir/etc/dpkg/dpkg.cfg.d/01-standin-nodoc"
    log "$name: apt-get install ${PACKAGES[$name]}"
    mkdir -p "$dir/var/cache/apt/archives"
    mount --bind "$CACHE/debs" "$dir/var/cache/apt/archives"
    if ! chroot_run "$dir" sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PACKAGES[$name]}" \
        >"$CACHE/apt-$name.log" 2>&1; then
        umount "$dir/var/cache/apt/archives"
        tail -n 40 "$CACHE/apt-$name.log" >&2
        exit 1
    fi
    umount "$dir/var/cache/apt/archives"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/etc/ssl/certs/ca-certificates.crt"
    case "$name" in
        python)
            ln -sf /usr/bin/python3 "$dir/usr/local/bin/python"
            ln -sf /usr/bin/python3 "$dir/usr/local/bin/python3"
            ;;
        mysql)
            rm -rf "$dir/var/lib/mysql"/* ;;
    esac
    rm -f "$dir/usr/sbin/policy-rc.d" "$dir/etc/resolv.conf"
    : >"$dir/etc/hostname"
    rm -rf "$dir/var/lib/apt/lists"/* "$dir/var/cache/apt"/*.bin "$dir/var/cache/apt/archives"/*.deb "$dir/var/log"/*.log \
        "$dir/var/log/apt"/* "$dir/tmp"/* "$dir/root/.cache"
    tar -C "$dir" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$dir"
    trap - EXIT
    log "$name: rootfs cached as $(basename "$tar") ($(du -h "$tar" | cut -f1), $(( $(now) - t0 ))s)"
    echo "$tar"
}

build_standin() {
    local name="$1" key tags first t0 rootfs_image tar
    t0=$(now)
    key="$(key_of "$name")"
    # shellcheck disable=SC2206
    tags=(${TAGS[$name]})
    first="${tags[0]}"
    local ctx_hash
    ctx_hash="$(cat "$ROOT/docker/standins/$name"/* "$ROOT/docker/standins/common"/* | sha256sum | cut -c1-12)"
    if [ "$(docker image inspect -f '{{ index .Config.Labels "org.etl-assets.standin-key" }}' "$first" 2>/dev/null || true)" = "$key-$ctx_hash" ]; then
        log "$name: $first is up to date (key $key-$ctx_hash)"
        return
    fi
    rootfs_image="etl-standin/$name-rootfs:$key"
    if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
        tar="$(rootfs_tar "$name")"
        log "$name: docker import $(basename "$tar") -> $rootfs_image"
        docker import "$tar" "$rootfs_image" >/dev/null
    fi
    local args=()
    for t in "${tags[@]}"; do args+=(-t "$t"); done
    DOCKER_BUILDKIT=0 docker build -q --build-arg "ROOTFS=$rootfs_image" \
        --label "org.etl-assets.standin-key=$key-$ctx_hash" "${args[@]}" \
        -f "$ROOT/docker/standins/$name/Dockerfile" "$ROOT/docker/standins" >/dev/null
    log "$name: built ${tags[*]} in $(( $(now) - t0 ))s"
}

T0=$(now)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(python mysql postgres haproxy)
for n in "${targets[@]}"; do
    [ -n "${PACKAGES[$n]:-}" ] || { log "unknown stand-in: $n"; exit 2; }
    build_standin "$n"
done

# Drop rootfs tarballs and imported rootfs images of older recipes.
keep=("rootfs-base-$SUITE-r$RECIPE_VERSION.tar")
for n in "${!PACKAGES[@]}"; do keep+=("rootfs-$n-$(key_of "$n").tar"); done
for f in "$CACHE"/rootfs-*.tar; do
    [ -e "$f" ] || continue
    case " ${keep[*]} " in *" $(basename "$f") "*) ;; *) log "pruning stale $(basename "$f")"; rm -f "$f" ;; esac
done
for n in "${!PACKAGES[@]}"; do
    current="$(key_of "$n")"
    docker images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null \
        | grep -E "(^|/)etl-standin/$n-rootfs:" | grep -v ":$current\$" \
        | xargs -r docker rmi >/dev/null 2>&1 || true
done
docker image prune -f --filter "label=org.etl-assets.standin-key" >/dev/null 2>&1 || true
log "all stand-ins ready in $(( $(now) - T0 ))s"
