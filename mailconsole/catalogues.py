"""Compile every locale/*/LC_MESSAGES/*.po into the .mo Django reads, with polib (no GNU gettext needed).

Run as `python -m mailconsole.catalogues` by `make run` and `make test` at set-up, and by the tests'
conftest; a .mo newer than its .po is left alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import polib

ROOT = Path(__file__).resolve().parent.parent  # the project directory


def compile_catalogues(locale_dir: Path = ROOT / "locale") -> list[Path]:
    written = []
    for po_path in sorted(locale_dir.glob("*/LC_MESSAGES/*.po")):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        catalogue = polib.pofile(str(po_path))
        temporary = mo_path.with_suffix(".mo.tmp")
        catalogue.save_as_mofile(str(temporary))
        temporary.replace(mo_path)
        written.append(mo_path)
    return written


if __name__ == "__main__":
    for path in compile_catalogues():
        print(f"compiled {path.relative_to(ROOT)}", file=sys.stderr)
