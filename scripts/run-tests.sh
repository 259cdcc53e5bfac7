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
  # Tests marked backend_independent (browser pages, SIGKILL durability, session processes) prove
  # nothing new on a second backend: they ran above, on SQLite.
  echo "== tests on PostgreSQL ($pg_url), except those marked backend_independent"
  DATABASE_URL=$pg_url .venv/bin/python -m pytest -m "not backend_independent" "$@"
  exit $?
else
  [ -z "${DATABASE_URL:-}" ] && echo "== no PostgreSQL reachable at $pg_url: PostgreSQL run skipped"
fi
exit 0
