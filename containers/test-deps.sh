#!/usr/bin/env bash
# System packages the test suite needs beside the Docker engine: a Java runtime
# (the model server, run natively by the serving tests), Debian's
# docker-registry (the push test) and chromium with chromium-driver (the front
# door's page in a browser). Installed only where missing, as root on Debian.
set -euo pipefail
missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || [ ! -f /etc/debian_version ]; then
  echo "tests need: ${missing[*]} (install them, or run make test as root on Debian)" >&2
  exit 1
fi
echo "installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
