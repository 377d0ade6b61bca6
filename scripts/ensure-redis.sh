#!/usr/bin/env bash
# ensure-redis.sh makes sure redis-server, redis-cli and redis-sentinel are on
# PATH, for the tests that start real Redis servers and clusters
# (internal/redistest). When one is missing and we are root on Debian or
# Ubuntu, it installs Debian's packages; otherwise it says how to install them
# and exits non-zero. It never starts or stops a system service: the tests
# start their own servers on free loopback ports.
set -euo pipefail

tools=(redis-server redis-cli redis-sentinel)
packages=(redis-server redis-tools redis-sentinel)

missing() {
	local t out=()
	for t in "${tools[@]}"; do
		command -v "$t" >/dev/null 2>&1 || out+=("$t")
	done
	echo "${out[*]:-}"
}

gone=$(missing)
if [ -z "$gone" ]; then
	echo "ensure-redis: $(redis-server --version)"
	exit 0
fi

if [ "$(id -u)" -ne 0 ] || [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
	cat >&2 <<MSG
ensure-redis: not found on PATH: $gone
Install Redis (7 or newer) with its CLI, then run make test again:
  Debian/Ubuntu: sudo apt-get install ${packages[*]}
  macOS:         brew install redis
This script installs the Debian packages by itself only when run as root on Debian.
MSG
	exit 1
fi

echo "ensure-redis: installing ${packages[*]} (missing: $gone)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"

gone=$(missing)
if [ -n "$gone" ]; then
	echo "ensure-redis: still not on PATH after apt-get install: $gone" >&2
	exit 1
fi
echo "ensure-redis: $(redis-server --version)"
