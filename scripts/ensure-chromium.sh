#!/usr/bin/env bash
# ensure-chromium.sh makes sure a Chromium browser is on PATH, for the
# headless end-to-end test of the example server's page
# (examples/httpserver/browsertest). When it is missing and we are root on
# Debian or Ubuntu, it installs Debian's chromium package; otherwise it says
# how to install it and exits non-zero. It never starts a browser: the test
# starts its own, headless, with a fresh profile.
set -euo pipefail

package=chromium

# locate prints the path of the first Chromium binary on PATH, or nothing.
locate() {
	local b
	for b in chromium chromium-browser; do
		if command -v "$b" >/dev/null 2>&1; then
			command -v "$b"
			return
		fi
	done
}

bin=$(locate)
if [ -n "$bin" ]; then
	echo "ensure-chromium: $("$bin" --version 2>/dev/null || echo "$bin")"
	exit 0
fi

if [ "$(id -u)" -ne 0 ] || [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then
	cat >&2 <<MSG
ensure-chromium: chromium not found on PATH
Install Chromium, then run make test again:
  Debian:  sudo apt-get install --no-install-recommends chromium
  Ubuntu:  sudo apt-get install chromium-browser
  macOS:   brew install --cask chromium
This script installs the Debian package by itself only when run as root on Debian.
MSG
	exit 1
fi

echo "ensure-chromium: installing $package"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "$package"

bin=$(locate)
if [ -z "$bin" ]; then
	echo "ensure-chromium: chromium still not on PATH after apt-get install $package" >&2
	exit 1
fi
echo "ensure-chromium: $("$bin" --version 2>/dev/null || echo "$bin")"
