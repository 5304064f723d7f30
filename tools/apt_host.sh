#!/usr/bin/env bash
# Install Debian packages on this machine (needs root): tools/apt_host.sh PACKAGE...
# Tries the local package lists first and refreshes them only when that fails.
set -euo pipefail
apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; }
