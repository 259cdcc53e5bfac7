"""SMTP policy decisions without sockets: client lists, relay tricks, hop counts, rule syntax."""

import pytest

from servers.smtp_policy import (
    ClientList,
    RuleError,
    connection_allowed,
    count_received_headers,
    is_relay_trick,
    normalize_rule,
)


@pytest.mark.parametrize(("kind", "raw", "canonical"), [
    ("address", " 192.168.1.7 ", "192.168.1.7"),
    ("network", "10.1.2.3/8", "10.0.0.0/8"),
    ("range", "192.168.1.1 - 192.168.1.11", "192.168.1.1-192.168.1.11"),
    ("domain", "Lab.Example.TEST.", "lab.example.test"),
    ("address", "::1", "::1"),
])
def test_rules_are_stored_in_canonical_form(kind, raw, canonical):
    assert normalize_rule(kind, raw) == canonical


@pytest.mark.parametrize(("kind", "raw"), [
    ("address", "300.1.1.1"),
    ("network", "10.0.0.0/33"),
    ("range", "192.168.1.11-192.168.1.1"),
    ("range", "192.168.1.1-::1"),
    ("domain", "two words"),
    ("colour", "red"),
])
def test_bad_rules_are_refused_with_a_sentence(kind, raw):
    with pytest.raises(RuleError) as error:
        normalize_rule(kind, raw)
    assert str(error.value)


def test_a_client_list_matches_addresses_networks_ranges_and_confirmed_names():
    clients = ClientList.from_rules([
        ("address", "127.0.0.5"), ("network", "10.0.0.0/8"), ("range", "192.168.1.1-192.168.1.11"),
        ("domain", "lab.test"),
    ])

    assert clients.matches("127.0.0.5")
    assert clients.matches("10.200.3.4")
    assert clients.matches("192.168.1.11") and not clients.matches("192.168.1.12")
    assert clients.matches("::ffff:10.0.0.1")
    assert clients.matches("203.0.113.9", "host.lab.test") and clients.matches("203.0.113.9", "lab.test")
    assert not clients.matches("203.0.113.9", "notlab.test")
    assert not clients.matches("203.0.113.9")
    assert not clients.matches("not an address")


def test_connection_control_works_in_both_modes():
    listed = ClientList.from_rules([("address", "127.0.0.5")])

    assert connection_allowed("only_listed", listed, "127.0.0.5", None)
    assert not connection_allowed("only_listed", listed, "127.0.0.6", None)
    assert not connection_allowed("all_except", listed, "127.0.0.5", None)
    assert connection_allowed("all_except", listed, "127.0.0.6", None)


@pytest.mark.parametrize("address", [
    "user%other.test@ours.test",
    "other.test!user@ours.test",
    '"user@other.test"@ours.test',
    "@ours.test:user@other.test",
    "user@[192.0.2.1]",
])
def test_classic_relay_tricks_are_recognised(address):
    assert is_relay_trick(address)


@pytest.mark.parametrize("address", ["user@ours.test", "first.last+tag@ours.test", "postmaster"])
def test_ordinary_addresses_are_not_tricks(address):
    assert not is_relay_trick(address)


def test_received_headers_are_counted_in_the_header_block_only():
    message = b"Received: a\r\nreceived: b\r\nRECEIVED: c\r\nSubject: x\r\n\r\nReceived: in the body\r\n"
    assert count_received_headers(message) == 3
