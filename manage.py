#!/usr/bin/env python
"""Django's command-line utility for MailConsole."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mailconsole.settings")
    from django.core.management import execute_from_command_line

    from mailconsole.var_dir import ensure_var_dir

    # Before the settings load: they read var/ and the keys generated there on the first start.
    ensure_var_dir()

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
