#!/usr/bin/env bash
# Installs the servers that the tests start themselves (tests/redis_server.py starts
# redis-server on a free loopback port): Debian's redis-server. Idempotent and quiet: it does
# nothing when `redis-server` is already on PATH, and prints apt's output only on failure.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "services.sh: redis-server is missing and installing it needs root (apt-get)" >&2
  exit 1
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server; } \
    >"$log" 2>&1; then
  cat "$log" >&2
  echo "services.sh: installing redis-server failed" >&2
  exit 1
fi
# Where the package starts a system service, stop it: the tests start their own.
if command -v service >/dev/null 2>&1; then
  service redis-server stop >/dev/null 2>&1 || true
fi
command -v redis-server >/dev/null
