"""The language of the command-line tools: `--language ru|en`, else the locale of the shell
(LC_ALL, then LC_MESSAGES, then LANG, as POSIX orders them; `ru_RU.UTF-8` means Russian), else English."""

from __future__ import annotations

import os
from collections.abc import Mapping

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import translation


def shell_language(environ: Mapping[str, str] = os.environ) -> str:
    """The first set one of LC_ALL, LC_MESSAGES and LANG, as a language the catalogues have ("en" otherwise)."""
    supported = {code for code, _ in settings.LANGUAGES}
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = environ.get(variable, "")
        if not value:
            continue
        code = value.split(".", 1)[0].split("@", 1)[0].split("_", 1)[0].lower()
        return code if code in supported else "en"
    return "en"


class TranslatedCommand(BaseCommand):
    """A management command that speaks the user's language (its texts marked with gettext)."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.add_argument(
            "--language",
            choices=[code for code, _ in settings.LANGUAGES],
            help="the language of the output (default: from LC_ALL, LC_MESSAGES or LANG)",
        )
        return parser

    def execute(self, *args, **options):
        with translation.override(options.get("language") or shell_language()):
            return super().execute(*args, **options)
