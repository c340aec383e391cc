#!/usr/bin/env bash
# Print the base image to build FROM. The public Python 3.11 slim image when it
# is present or can be pulled; otherwise an equivalent Debian bookworm base with
# Python 3.11, built here with debootstrap (its default mirror) and imported.
set -euo pipefail

public=${1:-python:3.11-slim-bookworm}
local_base=dogbreed-base:bookworm

if docker image inspect "$public" >/dev/null 2>&1 || timeout 60 docker pull -q "$public" >/dev/null 2>&1; then
  echo "$public"
  exit 0
fi
if docker image inspect "$local_base" >/dev/null 2>&1; then
  echo "$local_base"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "docker: cannot pull $public and building a local base needs root (debootstrap)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "docker: $public cannot be pulled; building $local_base with debootstrap" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$rootfs" >&2
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$local_base" >/dev/null
echo "$local_base"
