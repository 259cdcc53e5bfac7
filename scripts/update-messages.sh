#!/usr/bin/env bash
# Bring locale/ru/LC_MESSAGES/django.po up to date with the strings marked in the code and templates.
# Usage: scripts/update-messages.sh [project-dir]   (tests/test_catalogues.py runs it on a copy)
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
.venv/bin/python manage.py makemessages -l ru --no-location --no-obsolete \
  --ignore '.venv/*' --ignore 'var/*' --ignore 'node_modules/*' --ignore 'tests/*' --ignore 'benchmarks/*' -v0
