"""The aiosmtpd shims of servers.smtp: each test here fails if aiosmtpd (or asyncio) changes under one.

servers/smtp.py lists the shims (SHIM 1..9). SHIM 1 narrows `dir()` of a session and its handler
to the names aiosmtpd looks up on every connection; these tests build sessions with and without it
and compare what aiosmtpd derived from them. The others override or read aiosmtpd's private
methods and asyncio's StreamReader internals: their names and signatures are checked here, and
their behaviour end to end in tests/test_smtp_access.py and tests/test_smtp_hygiene.py.
"""

import asyncio
import inspect
from types import SimpleNamespace

import aiosmtpd
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


class FullDirSMTP(smtp.MailConsoleSMTP):
    def __dir__(self):
        return object.__dir__(self)


class FullDirHandler(smtp.LocalDeliveryHandler):
    def __dir__(self):
        return object.__dir__(self)


def uncached_session(loop, **options):
    """A session as aiosmtpd would see it without SHIM 1: every attribute listed."""
    handler = FullDirHandler(lambda: None, smtp.WorkerCounters(), None)
    return FullDirSMTP(
        handler,
        control=WorkerControl(),
        counters=smtp.WorkerCounters(),
        snapshot=SimpleNamespace(policy=SmtpPolicy()),
        hostname="mx.test",
        loop=loop,
        **options,
    )


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
    uncached = uncached_session(loop, **options)
    assert derived(cached) == derived(uncached)
    assert "DATA" in derived(cached)["commands"] and "RCPT" in derived(cached)["hooks"]
    assert derived(cached)["ehlo"] == "new"  # the 5-argument hook, with its signature computed once


def test_the_shims_are_written_for_the_pinned_aiosmtpd():
    # Upgrading aiosmtpd: read each SHIM in servers/smtp.py against the new version, then bump this.
    assert aiosmtpd.__version__ == smtp.AIOSMTPD_VERSION


# The aiosmtpd methods our session overrides (SHIM 2..7) or calls (SHIM 8), with the parameters we
# rely on: a renamed or re-signed one fails here before it fails in production.
AIOSMTPD_PRIVATE_API = {
    "_getaddr": ["self", "arg"],
    "_create_envelope": ["self"],
    "_cb_client_connected": ["self", "reader", "writer"],
    "_handle_client": ["self"],
    "_timeout_cb": ["self"],
    "_authenticate": ["self", "mechanism", "auth_data"],
    "_set_post_data_state": ["self"],
    "_call_handler_hook": ["self", "command", "args"],
    "check_helo_needed": ["self", "helo"],
    "check_auth_needed": ["self", "caller_method"],
    "auth_PLAIN": ["self", "_", "args"],
    "auth_LOGIN": ["self", "_", "args"],
    "smtp_DATA": ["self", "arg"],
}


@pytest.mark.parametrize(("name", "parameters"), sorted(AIOSMTPD_PRIVATE_API.items()))
def test_the_aiosmtpd_methods_we_override_or_call_keep_their_signature(name, parameters):
    assert list(inspect.signature(getattr(aiosmtpd.smtp.SMTP, name)).parameters) == parameters


def test_aiosmtpd_keeps_the_tls_state_we_read_after_starttls(loop):
    # SHIM 9 reads these to tell a STARTTLS handshake from the first connection.
    session = new_session(loop, smtp.LocalDeliveryHandler(lambda: None, smtp.WorkerCounters(), None))
    assert session._tls_protocol is None and session._original_transport is None


def test_a_stream_reader_keeps_the_buffer_and_limit_the_block_reader_uses(loop):
    # SHIM 8 and 9: asyncio's StreamReader keeps unread bytes in `_buffer` and its line limit in `_limit`.
    reader = asyncio.StreamReader(limit=64, loop=loop)
    reader.feed_data(b"DATA\r\n")
    assert isinstance(reader._buffer, bytearray) and reader._buffer == b"DATA\r\n"
    assert reader._limit == 64


def test_a_new_session_gets_our_envelope_and_wraps_the_reader(loop):
    handler = smtp.LocalDeliveryHandler(lambda: None, smtp.WorkerCounters(), None)
    session = new_session(loop, handler)
    session._set_post_data_state()  # SHIM 3: aiosmtpd builds every envelope through _create_envelope
    assert isinstance(session.envelope, smtp.LocalEnvelope)
    reader = asyncio.StreamReader(loop=loop)
    session._cb_client_connected(reader, SimpleNamespace())  # SHIM 4
    assert isinstance(session._reader, smtp.RecordingReader) and session._reader._inner is reader


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
