"""The sender checks and outbound limits as pure decisions (servers.smtp_policy), without sockets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from servers import replies
from servers.smtp_policy import (
    OutboundLimits,
    RuleError,
    SenderDomainLookup,
    SenderList,
    canonical_sender_entry,
    domain_allows_sender,
    domain_sender_refusal,
    effective_outbound_limits,
    normalized_domain,
    outbound_limit_exceeded,
    parse_sender_list,
    ptr_sender_refusal,
    sender_deny_refusal,
    sender_domain_refusal,
)
from servers.snapshot import ServerSnapshot, SmtpPolicy

pytestmark = pytest.mark.backend_independent


# -- names ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Example.COM.", "example.com"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("", None),
        ("a..b", None),
        ("[192.0.2.1]", None),
    ],
)
def test_domain_names_are_compared_lower_case_as_idna_a_labels_without_the_trailing_dot(raw, expected):
    assert normalized_domain(raw) == expected


# -- require_sender_domain -----------------------------------------------------------------------------


def test_a_sender_domain_without_mx_or_address_is_refused_with_550_5_1_8():
    refusal = sender_domain_refusal("bob@Nowhere.test", SenderDomainLookup(exists=False))
    assert refusal == replies.SENDER_DOMAIN_UNKNOWN.format(address="bob@Nowhere.test", domain="nowhere.test")
    assert refusal.startswith("550 5.1.8")


def test_a_sender_domain_that_exists_passes():
    assert sender_domain_refusal("bob@far.test", SenderDomainLookup(exists=True)) is None


def test_a_dns_timeout_on_the_sender_domain_accepts_the_mail():
    assert sender_domain_refusal("bob@slow.test", SenderDomainLookup(exists=False, failed=True)) is None


def test_the_null_sender_is_never_refused_for_its_domain():
    assert sender_domain_refusal("", SenderDomainLookup(exists=False)) is None


# -- ptr_matches_sender --------------------------------------------------------------------------------


def test_a_host_of_spam_com_posing_as_example_com_is_refused_with_550_5_7_1_naming_both():
    refusal = ptr_sender_refusal("ceo@example.com", ["mail.spam.com"])
    assert refusal == replies.PTR_NOT_IN_SENDER_DOMAIN.format(
        address="ceo@example.com", name="mail.spam.com", domain="example.com"
    )
    assert refusal.startswith("550 5.7.1")


@pytest.mark.parametrize(
    "sender, names",
    [
        ("ceo@example.com", ["MAIL.Example.COM."]),
        ("ceo@example.com", ["example.com"]),
        ("ceo@Example.com.", ["out1.mx.example.com"]),
        ("ceo@bücher.example", ["mx.xn--bcher-kva.example"]),
        ("ceo@example.com", ["mail.spam.com", "mail.example.com"]),
    ],
)
def test_a_name_in_the_senders_domain_or_a_subdomain_passes_whatever_its_case_idna_or_trailing_dot(sender, names):
    assert ptr_sender_refusal(sender, names) is None


def test_a_lookalike_domain_is_not_a_subdomain():
    assert ptr_sender_refusal("ceo@example.com", ["mail.badexample.com"]) is not None


def test_a_client_without_a_confirmed_name_is_refused_but_a_dns_timeout_accepts():
    assert "(none)" in ptr_sender_refusal("ceo@example.com", [])
    assert ptr_sender_refusal("ceo@example.com", [], lookup_failed=True) is None
    assert ptr_sender_refusal("", []) is None


# -- sender lists --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("@Example.org", "example.org"),
        ("example.org.", "example.org"),
        ("Boss@Example.ORG", "boss@example.org"),
        ("@bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_sender_list_entries_are_stored_in_one_canonical_form(raw, canonical):
    assert canonical_sender_entry(raw) == canonical


@pytest.mark.parametrize("raw", ["nodot", "user@", "@", "a@b@c.test", "<x@y.test>", "user@[192.0.2.1]", "-bad-.test"])
def test_what_is_neither_an_address_nor_a_domain_is_refused(raw):
    with pytest.raises(RuleError):
        canonical_sender_entry(raw)


def test_a_list_is_one_entry_a_line_without_duplicates():
    assert parse_sender_list("@example.org\nExample.org\n\n boss@far.test ") == ["example.org", "boss@far.test"]


def test_a_domain_entry_matches_the_domain_and_its_subdomains_and_an_address_entry_only_itself():
    senders = SenderList.from_text("example.org\nboss@far.test")
    assert senders.matches("anyone@example.org")
    assert senders.matches("anyone@mail.Example.ORG")
    assert not senders.matches("anyone@badexample.org")
    assert senders.matches("Boss@far.test")
    assert not senders.matches("other@far.test")
    assert not senders.matches("")  # <> is never on a list


def lab(**policy) -> ServerSnapshot:
    return ServerSnapshot(
        server_id=1,
        name="lab",
        ip_address="127.0.0.1",
        port=25,
        home_dir=Path("/nonexistent"),
        hostname="mx.test.invalid",
        desired_state="running",
        config_version=1,
        max_message_size_bytes=1024,
        default_domain="lab.test",
        local_domains=frozenset({"lab.test", "other.test"}),
        alias_targets={"alias.test": "lab.test"},
        domain_sender_lists={
            "lab.test": (SenderList.from_text("friend.test"), SenderList.from_text("pest@far.test")),
        },
        policy=dataclasses.replace(SmtpPolicy(), **policy),
    )


def test_the_server_deny_list_refuses_at_mail_with_550_5_7_1():
    policy = dataclasses.replace(SmtpPolicy(), sender_deny=SenderList.from_text("spam.test"))
    assert sender_deny_refusal(policy, "x@a.spam.test") == replies.SENDER_DENIED.format(address="x@a.spam.test")
    assert sender_deny_refusal(policy, "x@far.test") is None


def test_a_domains_lists_apply_to_its_recipients_and_its_alias_domains_only():
    snapshot = lab()
    refusal = domain_sender_refusal(snapshot, "lab.test", "pest@far.test", "alice@lab.test")
    assert refusal == replies.SENDER_DENIED_FOR_DOMAIN.format(address="pest@far.test", recipient="alice@lab.test")
    assert domain_sender_refusal(snapshot, "alias.test", "pest@far.test", "alice@alias.test") is not None
    assert domain_sender_refusal(snapshot, "other.test", "pest@far.test", "bob@other.test") is None
    assert domain_allows_sender(snapshot, "lab.test", "news@friend.test")
    assert not domain_allows_sender(snapshot, "other.test", "news@friend.test")


# -- outbound limits -----------------------------------------------------------------------------------


def test_a_mailbox_override_replaces_the_servers_limit_and_0_turns_it_off_for_that_mailbox():
    policy = dataclasses.replace(
        SmtpPolicy(),
        outbound_max_messages_per_hour=10,
        outbound_max_messages_per_day=100,
        outbound_max_new_recipients_per_day=50,
    )
    assert effective_outbound_limits(policy) == OutboundLimits(10, 100, 50)
    assert effective_outbound_limits(policy, (None, 0, 500)) == OutboundLimits(10, 0, 500)
    assert not effective_outbound_limits(SmtpPolicy())


@pytest.mark.parametrize(
    "figures, reason",
    [
        ((10, 10, 5), None),
        ((11, 11, 5), "more than 10 messages in an hour"),
        ((5, 101, 5), "more than 100 messages in a day"),
        ((5, 50, 51), "more than 50 new recipients in a day"),
    ],
)
def test_a_message_that_passes_a_limit_is_named_by_the_limit_it_passes(figures, reason):
    hour, day, new = figures
    limits = OutboundLimits(10, 100, 50)
    assert (
        outbound_limit_exceeded(limits, messages_this_hour=hour, messages_today=day, new_recipients_today=new) == reason
    )


def test_limits_of_0_never_block():
    assert (
        outbound_limit_exceeded(
            OutboundLimits(), messages_this_hour=10**6, messages_today=10**6, new_recipients_today=1
        )
        is None
    )
