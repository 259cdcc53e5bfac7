"""Every user-visible string is marked for translation: an extractor-based scan of the templates
(text and user-visible attributes outside {% translate %} / {% blocktranslate %}) and of the Python
code (literal messages handed to the console's flash messages, form errors, refusals and command
errors). Files still being translated are listed in PENDING; the list may only shrink."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.template.base import Lexer, TokenType

REPO_DIR = Path(__file__).resolve().parent.parent
TEMPLATE_DIRS = [
    REPO_DIR / "frontend" / "templates",
    REPO_DIR / "servers" / "templates",
    REPO_DIR / "api" / "templates",
]
PYTHON_DIRS = [REPO_DIR / "frontend", REPO_DIR / "servers", REPO_DIR / "api"]

# Words that stay as they are in every language: names, protocols, units, commands.
UNTRANSLATED_WORDS = {
    "MailConsole",
    "SMTP",
    "POP3",
    "IMAP",
    "TLS",
    "STARTTLS",
    "STLS",
    "DKIM",
    "SPF",
    "DMARC",
    "DNS",
    "DNSBL",
    "MX",
    "PTR",
    "TXT",
    "CSV",
    "UTF",
    "BOM",
    "IP",
    "IPv4",
    "IPv6",
    "API",
    "REST",
    "KB",
    "MB",
    "GB",
    "KiB",
    "MiB",
    "ID",
    "UID",
    "UIDL",
    "HELO",
    "EHLO",
    "RCPT",
    "DATA",
    "AUTH",
    "PLAIN",
    "LOGIN",
    "SASL",
    "CIDR",
    "RSA",
    "Ed25519",
    "EN",
    "RU",
    "OK",
    "Maildir",
    "Drop",
    "Pickup",
    "Queue",
    "BadMail",
    "IIS",
    "Exchange",
    "Outlook",
    "Thunderbird",
    "Windows",
    "Excel",
    "winpop",
    "smtpsvc",
    "pop3svc",
    "imapsvc",
    "smtpqueue",
    "Celery",
    "Redis",
    "PostgreSQL",
    "SQLite",
    "HTTP",
    "HTTPS",
    "URL",
    "JSON",
    "NDR",
    "DSN",
    "Message-ID",
}
WORD = re.compile(r"[A-Za-z][A-Za-z'’-]+")
USER_VISIBLE_ATTRIBUTES = re.compile(r'\b(?:title|placeholder|aria-label|alt)="([^"{]*)"')

# Templates and modules whose strings are not marked yet (issue: MailConsole in Russian and English).
PENDING_TEMPLATES: set[str] = {
    "frontend/templates/console/dashboard.html",
    "frontend/templates/console/domain_mailboxes.html",
    "frontend/templates/console/mailbox_detail.html",
    "frontend/templates/console/server_domains.html",
    "frontend/templates/console/server_properties.html",
    "frontend/templates/console/services.html",
    "frontend/templates/webmail/message.html",
}
PENDING_PYTHON: set[str] = {
    "frontend/views/domains.py",
    "frontend/views/mailboxes.py",
    "frontend/views/servers.py",
    "servers/management/commands/smtpsvc.py",
    "servers/services/domains.py",
    "servers/services/mailboxes.py",
    "servers/services/names.py",
    "servers/services/virtual_servers.py",
}


def visible_words(html: str) -> list[str]:
    """English words a reader sees in a piece of template text: tag contents and some attributes."""
    html = re.sub(r"<script\b.*?</script>|<style\b.*?</style>|<!--.*?-->", " ", html, flags=re.S)
    words = []
    for attribute in USER_VISIBLE_ATTRIBUTES.findall(html):
        words += WORD.findall(attribute)
    text = re.sub(r"<[^>]*>", " ", html)
    text = re.sub(r"&\w+;|&#\d+;", " ", text)
    words += WORD.findall(text)
    return [w for w in words if w not in UNTRANSLATED_WORDS and not w.isupper()]


def unmarked_template_words(path: Path) -> list[str]:
    source = path.read_text()
    found: list[str] = []
    skipping = 0  # inside {% blocktranslate %}, {% comment %}, {% verbatim %} or a {% block body_class %}
    blocks: list[str] = []
    text_parts: list[str] = []
    for token in Lexer(source).tokenize():
        if token.token_type == TokenType.BLOCK:
            bits = token.contents.split()
            name = bits[0] if bits else ""
            if name in ("blocktranslate", "blocktrans", "comment", "verbatim"):
                skipping += 1
            elif name in ("endblocktranslate", "endblocktrans", "endcomment", "endverbatim"):
                skipping -= 1
            elif name == "block":
                # A block that fills a class attribute holds CSS class names, not words.
                blocks.append(bits[1] if len(bits) > 1 else "")
                skipping += blocks[-1].endswith("class")
            elif name == "endblock" and blocks:
                skipping -= blocks.pop().endswith("class")
            text_parts.append(" ")
        elif token.token_type == TokenType.TEXT and not skipping:
            text_parts.append(token.contents)
        else:
            text_parts.append(" ")
    found += visible_words("".join(text_parts))
    return found


def template_files() -> list[Path]:
    return sorted(p for d in TEMPLATE_DIRS if d.exists() for p in d.rglob("*.html"))


@pytest.mark.backend_independent
@pytest.mark.parametrize("path", template_files(), ids=lambda p: str(p.relative_to(REPO_DIR)))
def test_template_text_is_marked_for_translation(path):
    name = str(path.relative_to(REPO_DIR))
    words = unmarked_template_words(path)
    if name in PENDING_TEMPLATES:
        assert words, f"{name} is translated now: take it off PENDING_TEMPLATES"
        return
    assert not words, f"{name}: text not marked for translation: {' '.join(words[:30])}"


# Calls whose first argument a person reads: flash messages, form errors, refusals, command errors.
MESSAGE_CALLS = {"success", "error", "warning", "info", "add_error", "RefusedError", "CommandError", "ValidationError"}


def unmarked_messages(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in MESSAGE_CALLS or not node.args:
            continue
        # messages.success(request, TEXT), form.add_error(field, TEXT): the text is the second argument.
        text = (
            node.args[1]
            if name in ("success", "error", "warning", "info", "add_error") and len(node.args) > 1
            else node.args[0]
        )
        if name in ("success", "error", "warning", "info") and not (
            isinstance(node.func, ast.Attribute) and getattr(node.func.value, "id", "") == "messages"
        ):
            continue
        if isinstance(text, ast.JoinedStr) or (
            isinstance(text, ast.Constant) and isinstance(text.value, str) and WORD.search(text.value)
        ):
            found.append(f"line {node.lineno}: {ast.unparse(text)[:80]}")
    return found


def python_files() -> list[Path]:
    return sorted(
        p for d in PYTHON_DIRS for p in d.rglob("*.py") if "migrations" not in p.parts and "tests" not in p.parts
    )


@pytest.mark.backend_independent
def test_messages_people_read_are_marked_for_translation_in_the_code():
    unmarked = {}
    for path in python_files():
        name = str(path.relative_to(REPO_DIR))
        found = unmarked_messages(path)
        if name in PENDING_PYTHON:
            assert found, f"{name} is translated now: take it off PENDING_PYTHON"
        elif found:
            unmarked[name] = found
    assert not unmarked, f"messages not marked for translation: {unmarked}"
