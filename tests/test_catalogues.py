"""The Russian catalogue is complete: every string marked in the code and templates is in it, translated,
with the same placeholders; a string marked without `make messages` fails here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import polib
import pytest

from mailconsole.catalogues import compile_catalogues

REPO_DIR = Path(__file__).resolve().parent.parent
RUSSIAN = REPO_DIR / "locale" / "ru" / "LC_MESSAGES" / "django.po"
PLACEHOLDER = re.compile(r"%\((\w+)\)[sdif]|\{(\w*)\}")

pytestmark = pytest.mark.backend_independent


def entry_key(entry: polib.POEntry) -> tuple[str, str, str]:
    return (entry.msgctxt or "", entry.msgid, entry.msgid_plural or "")


def placeholders(text: str) -> set[str]:
    return {a or b for a, b in PLACEHOLDER.findall(text)}


def test_every_russian_entry_is_translated_and_none_is_fuzzy():
    catalogue = polib.pofile(str(RUSSIAN))
    untranslated = [entry.msgid for entry in catalogue.untranslated_entries()]
    fuzzy = [entry.msgid for entry in catalogue.fuzzy_entries()]
    assert not untranslated, f"translate these in {RUSSIAN.relative_to(REPO_DIR)}: {untranslated}"
    assert not fuzzy, f"check and unmark these fuzzy entries: {fuzzy}"
    assert catalogue.metadata["Plural-Forms"].startswith("nplurals=3;")


def test_russian_translations_keep_the_placeholders_of_the_english():
    wrong = []
    for entry in polib.pofile(str(RUSSIAN)):
        wanted = placeholders(entry.msgid) | placeholders(entry.msgid_plural or "")
        translations = entry.msgstr_plural.values() if entry.msgid_plural else [entry.msgstr]
        for text in translations:
            if not placeholders(text) <= wanted or (not entry.msgid_plural and placeholders(text) != wanted):
                wrong.append((entry.msgid, text))
    assert not wrong


def test_the_catalogue_holds_exactly_the_strings_marked_in_the_tree(tmp_path):
    """Extract the marked strings from a copy of the tree, as `make messages` does, and compare."""
    copy = tmp_path / "tree"
    ignore = shutil.ignore_patterns(
        ".venv", "var", ".git", "node_modules", "tests", "benchmarks", "*.pyc", "__pycache__", "*.mo"
    )
    shutil.copytree(REPO_DIR, copy, ignore=ignore, symlinks=True)
    (copy / ".venv").symlink_to(REPO_DIR / ".venv")
    env = {**os.environ, "MAILCONSOLE_VAR_DIR": str(tmp_path / "var")}
    env.pop("DATABASE_URL", None)
    subprocess.run([str(copy / "scripts" / "update-messages.sh"), str(copy)], check=True, env=env, timeout=120)

    extracted = {
        entry_key(entry) for entry in polib.pofile(str(copy / "locale/ru/LC_MESSAGES/django.po")) if not entry.obsolete
    }
    kept = {entry_key(entry) for entry in polib.pofile(str(RUSSIAN)) if not entry.obsolete}
    assert not extracted - kept, f"run `make messages` and translate: {sorted(extracted - kept)}"
    assert not kept - extracted, f"no longer marked anywhere (run `make messages`): {sorted(kept - extracted)}"


def test_compiling_turns_each_catalogue_into_the_file_django_reads(tmp_path):
    target = tmp_path / "ru" / "LC_MESSAGES"
    target.mkdir(parents=True)
    shutil.copy(RUSSIAN, target / "django.po")
    assert compile_catalogues(tmp_path) == [target / "django.mo"]
    compiled = polib.mofile(str(target / "django.mo"))
    assert compiled.find("Sign in").msgstr == "Войти"
    assert compile_catalogues(tmp_path) == []  # up to date: left alone
