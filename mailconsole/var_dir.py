"""The installation's var/ directory and the keys kept in it.

Settings only read from here; `ensure_var_dir()` is the one step that creates the directory and
generates missing keys. The programs that start MailConsole call it before Django loads its
settings: `manage.py` (so `make setup`, `make run`, docker-compose's `setup` service and every worker
process), `mailconsole/wsgi.py`, and the test session (`tests/environment.py`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# Django's signing key, and the Fernet keys for secrets stored in the database (smart-host passwords).
SECRET_KEY_FILE = "secret_key"
SECRETS_KEY_FILE = "secrets_key"
# STATIC_ROOT: empty unless `manage.py collectstatic` ran (WhiteNoise also serves from the finders), but
# there, so WhiteNoise does not warn "No directory at" in every web process.
STATIC_DIR = "static"


def var_dir() -> Path:
    """Where everything the running service writes lives (database, mail homes, pid and log files)."""
    return Path(os.environ.get("MAILCONSOLE_VAR_DIR") or BASE_DIR / "var").resolve()


def ensure_var_dir() -> Path:
    """Create var/ and generate the keys the environment does not supply; keep those already there."""
    directory = var_dir()
    (directory / STATIC_DIR).mkdir(parents=True, exist_ok=True)
    if not (os.environ.get("MAILCONSOLE_SECRET_KEY") or os.environ.get("SECRET_KEY")):
        from django.core.management.utils import get_random_secret_key

        _create_once(directory / SECRET_KEY_FILE, get_random_secret_key())
    if not os.environ.get("MAILCONSOLE_SECRETS_KEY"):
        from cryptography.fernet import Fernet

        _create_once(directory / SECRETS_KEY_FILE, Fernet.generate_key().decode())
    return directory


def _create_once(path: Path, content: str) -> None:
    """Write a new key file readable by its owner only, unless one exists.

    Written whole, then linked into place: processes starting together all end up reading the same key.
    """
    if path.exists():
        return
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        os.unlink(temporary)


def read_key_file(name: str) -> str:
    """A key ensure_var_dir() generated, or '' when there is none."""
    try:
        return (var_dir() / name).read_text().strip()
    except FileNotFoundError:
        return ""
