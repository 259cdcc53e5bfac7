# `make run` sets up and runs the whole stack; `make test` sets up and runs every check and test:
# lint, format, types (`make lint` runs these three alone), then pytest on SQLite and on PostgreSQL.
.PHONY: run test lint setup messages

setup:
	@scripts/setup-venv.sh requirements.txt
	@.venv/bin/python -m mailconsole.catalogues
	@.venv/bin/python manage.py migrate --noinput -v0

run: setup
	@.venv/bin/python manage.py runstack

test:
	@scripts/install-test-packages.sh
	@scripts/setup-venv.sh requirements-dev.txt
	@.venv/bin/python -m mailconsole.catalogues
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy
	@scripts/run-tests.sh

lint:
	@scripts/setup-venv.sh requirements-dev.txt
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy

# After marking new strings for translation: add them to locale/ru/LC_MESSAGES/django.po (then
# translate them there; tests/test_catalogues.py fails while one is missing or untranslated).
messages:
	@scripts/setup-venv.sh requirements-dev.txt
	@scripts/update-messages.sh
