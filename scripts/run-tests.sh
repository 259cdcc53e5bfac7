#!/usr/bin/env bash
# Run the whole suite on SQLite, then again on PostgreSQL when one is reachable.
# TEST_POSTGRES_URL names the PostgreSQL server (default: the local one, user postgres).
set -uo pipefail
cd "$(dirname "$0")/.."
pg_url=${TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/mailconsole}

echo "== tests on ${DATABASE_URL:-SQLite}"
env .venv/bin/python -m pytest "$@"
status=$?
[ $status -ne 0 ] && exit $status

if [ -z "${DATABASE_URL:-}" ] && .venv/bin/python - "$pg_url" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1].rsplit("/", 1)[0] + "/postgres", connect_timeout=2).close()
except Exception:
    sys.exit(1)
PY
then
  echo "== tests on PostgreSQL ($pg_url)"
  DATABASE_URL=$pg_url .venv/bin/python -m pytest "$@"
  exit $?
else
  [ -z "${DATABASE_URL:-}" ] && echo "== no PostgreSQL reachable at $pg_url: PostgreSQL run skipped"
fi
exit 0
