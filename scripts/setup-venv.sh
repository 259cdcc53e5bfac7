#!/usr/bin/env bash
# Create .venv and install the pinned requirements; repeat runs only install what changed.
# Usage: scripts/setup-venv.sh requirements.txt|requirements-dev.txt
set -euo pipefail
cd "$(dirname "$0")/.."
req=${1:-requirements.txt}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "need root to run: $*" >&2; return 1; fi; }

if [ ! -x .venv/bin/python ]; then
  if ! "$python" -m venv .venv >/dev/null 2>&1; then
    # Debian splits venv out of the interpreter package.
    rm -rf .venv
    echo "installing python3-venv from Debian..."
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    "$python" -m venv .venv
  fi
  .venv/bin/python -m pip install -q --upgrade pip
fi

stamp=".venv/.installed-$(cat requirements*.txt | sha1sum | cut -c1-12)-$(basename "$req")"
if [ ! -f "$stamp" ]; then
  echo "installing Python packages from $req..."
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
  touch "$stamp"
fi
