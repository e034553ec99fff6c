#!/usr/bin/env bash
# Builds, from Debian's packages only, the local images the compose test uses in
# place of the registry's (no image registry is reachable where it runs):
#
#   scepline-compose-test/python:3.11    for python:3.11-slim (the Dockerfile's base)
#   scepline-compose-test/rabbitmq:3     for rabbitmq:3.13-management
#   scepline-compose-test/postgres:15    for postgres:16
#
# They sit on a Debian bookworm root file system made by debootstrap and brought
# in with `docker import`. The root file system is kept as a tarball in
# $SCEPLINE_TEST_COMPOSE_CACHE (default /var/cache/scepline-compose) and the
# images in Docker's own store, so a second run only checks Docker's build cache.
# Needs a running Docker engine, and root and debootstrap for the first run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${SCEPLINE_TEST_COMPOSE_CACHE:-/var/cache/scepline-compose}"
mirror="${SCEPLINE_TEST_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
rootfs_image=scepline-compose-test/rootfs:bookworm
tarball="$cache/bookworm-minbase.tar"
log() { printf '>> %s\n' "$*" >&2; }

make_rootfs_tarball() {
    command -v debootstrap >/dev/null \
        || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 1; }
    log "debootstrap: a Debian bookworm root file system into $tarball"
    mkdir -p "$cache"
    local work
    work="$(mktemp -d "$cache/rootfs.XXXXXX")"
    if ! debootstrap --variant=minbase --include=ca-certificates bookworm "$work/root" "$mirror" \
        >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        rm -rf "$work"
        exit 1
    fi
    # What an image does not need: downloaded packages and package lists.
    rm -rf "$work/root/var/cache/apt/"*.bin "$work/root/var/cache/apt/archives/"*.deb \
        "$work/root/var/lib/apt/lists/"*
    tar --numeric-owner -C "$work/root" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$work"
}

if ! docker image inspect "$rootfs_image" >/dev/null 2>&1; then
    [ -s "$tarball" ] || make_rootfs_tarball
    log "docker import $tarball as $rootfs_image"
    docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$rootfs_image" \
        >/dev/null
fi

# The build context: the stand-ins' Dockerfile and scripts, and the certificate
# authorities this machine trusts beyond Debian's (e.g. a TLS-inspecting egress
# proxy's), so that apt, pip and uv inside the builds reach their registries as
# the host does.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$here/images/"* "$context/"
mkdir "$context/extra-ca"
for ca in /usr/local/share/ca-certificates/*.crt; do
    [ -e "$ca" ] && cp "$ca" "$context/extra-ca/"
done
for target in python:3.11 rabbitmq:3 postgres:15; do
    tag="scepline-compose-test/$target"
    log "docker build $tag"
    docker build --target "${target%%:*}" --tag "$tag" "$context" >"$context/build.log" 2>&1 \
        || { tail -n 40 "$context/build.log" >&2; exit 1; }
done
