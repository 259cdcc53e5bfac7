"""The files a new user relies on say what the code does."""

from pathlib import Path

import yaml

REPO_DIR = Path(__file__).resolve().parent.parent


def test_docker_compose_runs_the_same_processes_as_make_run():
    compose = yaml.safe_load((REPO_DIR / "docker-compose.yml").read_text())
    services = compose["services"]

    assert {"web", "worker", "beat", "redis", "postgres"} <= set(services)
    assert "celery -A mailconsole worker" in services["worker"]["command"]
    assert "celery -A mailconsole beat" in services["beat"]["command"]
    assert "gunicorn mailconsole.wsgi" in services["web"]["command"]
    for name in ("web", "worker", "beat", "setup"):
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert services[name]["environment"]["REDIS_URL"].startswith("redis://")


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO_DIR / "README.md").read_text()
    ci = (REPO_DIR / ".ci" / "run").read_text()

    assert "make test" in readme and "make run" in readme
    assert [line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))] == ["make test"]


def test_every_runtime_requirement_is_pinned():
    for line in (REPO_DIR / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert "==" in line, line
