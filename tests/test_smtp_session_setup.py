"""A new SMTP session finds the same commands, AUTH mechanisms and hooks with the per-class cache.

servers.smtp replaces `inspect` and `dir` inside aiosmtpd.smtp with a per-class cache (aiosmtpd
runs them for every connection). These tests build sessions both ways and compare what aiosmtpd
derived from them.
"""

import asyncio
import builtins
import inspect
from types import SimpleNamespace

import aiosmtpd.smtp
import pytest

from servers import smtp
from servers.snapshot import SmtpPolicy
from servers.workers.base import WorkerControl


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def new_session(loop, handler, **options):
    snapshot = SimpleNamespace(policy=SmtpPolicy())
    return smtp.MailConsoleSMTP(
        handler,
        control=WorkerControl(),
        counters=smtp.WorkerCounters(),
        snapshot=snapshot,
        hostname="mx.test",
        loop=loop,
        **options,
    )


def without_cache(build):
    aiosmtpd.smtp.inspect = inspect
    aiosmtpd.smtp.dir = builtins.dir
    try:
        return build()
    finally:
        aiosmtpd.smtp.inspect = smtp._introspection
        aiosmtpd.smtp.dir = smtp._introspection.dir


def derived(session):
    return {
        "commands": sorted(session._smtp_methods),
        "auth": sorted((name, attr.is_builtin) for name, attr in session._auth_methods.items()),
        "hooks": sorted(session._handle_hooks),
        "ehlo": session._ehlo_hook_ver,
    }


@pytest.mark.parametrize("options", [{}, {"auth_exclude_mechanism": ["PLAIN", "LOGIN"]}])
def test_a_cached_session_derives_what_aiosmtpd_derives_itself(loop, options):
    handler = smtp.LocalDeliveryHandler(lambda: None, smtp.WorkerCounters(), None)
    new_session(loop, handler, **options)  # fills the cache
    cached = new_session(loop, handler, **options)
    uncached = without_cache(lambda: new_session(loop, handler, **options))
    assert derived(cached) == derived(uncached)
    assert "DATA" in derived(cached)["commands"] and "RCPT" in derived(cached)["hooks"]


def test_a_cached_session_runs_its_own_commands_not_the_first_sessions(loop):
    handler = smtp.LocalDeliveryHandler(lambda: None, smtp.WorkerCounters(), None)
    first, second = new_session(loop, handler), new_session(loop, handler)
    assert second._smtp_methods["DATA"].__self__ is second
    assert first._smtp_methods["DATA"].__self__ is first
    assert second._auth_methods["PLAIN"].method.__self__ is second
    assert second._handle_hooks["RCPT"].__self__ is handler


@pytest.mark.parametrize(
    "arg",
    [
        "<alice@lab.test>",
        "<alice@lab.test> SIZE=100",
        "alice@lab.test",
        " <alice@lab.test>",
        "<>",
        '<"quoted name"@lab.test>',
        "<@relay.test:alice@lab.test>",
        "<alice@[192.0.2.1]>",
        "<broken",
        "no-at-sign",
        "<a@b> BODY=8BITMIME SMTPUTF8",
        "<" + "x" * 70 + "@lab.test>",
        "",
    ],
)
def test_addresses_parse_as_aiosmtpd_parses_them(loop, arg):
    handler = smtp.LocalDeliveryHandler(lambda: None, smtp.WorkerCounters(), None)
    ours = new_session(loop, handler)
    theirs = new_session(loop, handler)
    assert ours._getaddr(arg) == aiosmtpd.smtp.SMTP._getaddr(theirs, arg)
    assert ours._getaddr(arg) == ours._getaddr(arg)  # and the remembered answer is the same
