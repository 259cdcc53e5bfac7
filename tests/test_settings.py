"""Settings read var/ and its keys; only `ensure_var_dir()`, called when a program starts, writes them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mailconsole import var_dir

REPO_DIR = Path(__file__).resolve().parent.parent
KEY_VARIABLES = ("MAILCONSOLE_SECRET_KEY", "SECRET_KEY", "MAILCONSOLE_SECRETS_KEY")


def import_settings(var: Path, **extra: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in KEY_VARIABLES}
    env.update(MAILCONSOLE_VAR_DIR=str(var), **extra)
    return subprocess.run(
        [sys.executable, "-c", "import mailconsole.settings"],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_importing_the_settings_writes_nothing(tmp_path):
    var = tmp_path / "var"
    done = import_settings(
        var,
        MAILCONSOLE_SECRET_KEY="settings-test-secret-key-0123456789abcdefghijklmnop",
        MAILCONSOLE_SECRETS_KEY="wB2gbt8jDHkNP5h1BjVrMQ0-Xtz8HtRYELvDJsJ6-as=",
    )
    assert done.returncode == 0, done.stderr
    assert not var.exists()


def test_without_keys_the_settings_say_how_to_get_them(tmp_path):
    done = import_settings(tmp_path)
    assert done.returncode != 0
    assert "Set MAILCONSOLE_SECRET_KEY, or start MailConsole once with manage.py" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_first_start_generates_each_key_once_for_its_owner_only(tmp_path, monkeypatch):
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAILCONSOLE_VAR_DIR", str(tmp_path / "var"))
    directory = var_dir.ensure_var_dir()
    keys = {name: (directory / name).read_text() for name in (var_dir.SECRET_KEY_FILE, var_dir.SECRETS_KEY_FILE)}
    var_dir.ensure_var_dir()
    for name, key in keys.items():
        assert key and (directory / name).read_text() == key
        assert (directory / name).stat().st_mode & 0o777 == 0o600
    assert (directory / var_dir.STATIC_DIR).is_dir()
    assert sorted(path.name for path in directory.iterdir()) == sorted([*keys, var_dir.STATIC_DIR])


def test_keys_given_in_the_environment_are_not_written(tmp_path, monkeypatch):
    monkeypatch.setenv("MAILCONSOLE_SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("MAILCONSOLE_SECRETS_KEY", "from-the-environment")
    monkeypatch.setenv("MAILCONSOLE_VAR_DIR", str(tmp_path / "var"))
    directory = var_dir.ensure_var_dir()
    assert [path.name for path in directory.iterdir()] == [var_dir.STATIC_DIR]
