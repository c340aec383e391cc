#!/usr/bin/env bash
# Make sure a Docker engine answers. Where none does and we are root on Debian,
# install Debian's docker.io if needed and start dockerd with host networking
# only (no bridge, no iptables): containers then see loopback and what the host
# sees, nothing else. Otherwise fail in one line.
set -euo pipefail

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  echo "docker: no Docker engine answers; start one (or run make as root on Debian to let it start one)" >&2
  exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker: installing Debian's docker.io" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
log=/var/log/dogbreed-dockerd.log
echo "docker: starting dockerd (log: $log)" >&2
nohup dockerd --iptables=false --ip6tables=false --bridge=none >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "docker: dockerd did not answer within 60 s; see $log" >&2
exit 1
