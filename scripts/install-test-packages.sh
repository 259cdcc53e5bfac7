#!/usr/bin/env bash
# Install the Debian programs the tests drive as real clients (swaks, fetchmail, curl, and chromium for the console browser tests), if any is missing.
set -euo pipefail
packages=(swaks chromium fetchmail curl)
commands=(swaks chromium fetchmail curl)
missing=()
for i in "${!commands[@]}"; do
  command -v "${commands[$i]}" >/dev/null 2>&1 || missing+=("${packages[$i]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to install: ${missing[*]}" >&2; exit 1; fi; }
echo "installing Debian packages: ${missing[*]}"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
