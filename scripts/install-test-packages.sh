#!/usr/bin/env bash
# Install the Debian packages the tests drive as real clients, if any is missing: swaks (with
# Net::SSLeay for its --tls), fetchmail, curl, neomutt, isync (mbsync), chromium for the console's browser
# tests, OpenDKIM (opendkim, opendkim-tools) as the second DKIM verifier, and rspamd, which the Filters
# tab's tests run on loopback with a configuration of their own (its packaged service is not used).
set -euo pipefail
packages=(swaks libnet-ssleay-perl fetchmail curl neomutt isync chromium opendkim opendkim-tools rspamd)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to install: ${missing[*]}" >&2; exit 1; fi; }
echo "installing Debian packages: ${missing[*]}"
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
