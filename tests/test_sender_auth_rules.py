"""SPF (servers.spf), DMARC and Authentication-Results (servers.message_auth) and their SMTP decisions,
without sockets: DNS is a dict (`FakeDns`), so every rule of RFC 7208 and RFC 7489 we rely on is
checked in microseconds. The same rules over a real socket and a real DNS server are in
tests/test_sender_auth.py.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from servers import replies
from servers.message_auth import (
    DkimResult,
    DmarcRecord,
    aligned,
    authentication_results,
    dmarc_outcome,
    from_domain,
    organizational_domain,
    parse_dmarc_record,
    sender_check,
    strip_our_results,
)
from servers.smtp_policy import dmarc_quarantines, dmarc_refusal, sender_auth_applies, spf_refusal
from servers.snapshot import SmtpPolicy
from servers.spf import SpfResult, SpfTempError, check_host

pytestmark = pytest.mark.backend_independent


class FakeDns:
    """Answers from a dict of (name, rdtype) -> records; `failing` names raise a temporary error."""

    def __init__(self, records: dict[tuple[str, str], list[str]] | None = None) -> None:
        self.records = records or {}
        self.failing: set[str] = set()
        self.asked: list[tuple[str, str]] = []

    def txt(self, name: str, *values: str) -> FakeDns:
        self.records.setdefault((name, "TXT"), []).extend(values)
        return self

    def add(self, name: str, rdtype: str, *values: str) -> FakeDns:
        self.records.setdefault((name, rdtype), []).extend(values)
        return self

    async def __call__(self, name: str, rdtype: str) -> list[str]:
        self.asked.append((name, rdtype))
        if name in self.failing:
            raise SpfTempError(f"{name}: timeout")
        return self.records.get((name, rdtype), [])


def spf(dns: FakeDns, ip: str, sender: str = "bob@far.test", helo: str = "mail.far.test") -> SpfResult:
    return asyncio.run(check_host(ip, sender.rpartition("@")[2], sender, helo=helo, lookup=dns))


# -- SPF results ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "ip", "expected"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", "192.0.2.7", "pass"),
        ("v=spf1 ip4:192.0.2.0/24 -all", "198.51.100.1", "fail"),
        ("v=spf1 ip4:192.0.2.1 ~all", "198.51.100.1", "softfail"),
        ("v=spf1 ?all", "198.51.100.1", "neutral"),
        ("v=spf1 ip4:192.0.2.1", "198.51.100.1", "neutral"),  # nothing matched, no all
        ("v=spf1 ip6:2001:db8::/32 -all", "2001:db8::25", "pass"),
        ("v=spf1 ip6:2001:db8::/32 -all", "::ffff:192.0.2.7", "fail"),  # IPv4-mapped is IPv4
        ("v=spf1 ip4:192.0.2.7 -all", "::ffff:192.0.2.7", "pass"),
        ("V=SPF1 IP4:192.0.2.7 -ALL", "192.0.2.7", "pass"),  # case-insensitive
        ("v=spf1 frobnicate -all", "192.0.2.7", "permerror"),
        ("v=spf1 ip4:192.0.2.300 -all", "192.0.2.7", "permerror"),
        ("v=spf1 redirect=_spf.far.test ip4:192.0.2.7 redirect=other.test", "192.0.2.7", "permerror"),
    ],
)
def test_spf_results_of_ip_mechanisms_and_qualifiers(record, ip, expected):
    assert spf(FakeDns().txt("far.test", record), ip).result == expected


def test_a_domain_without_spf_record_is_none_and_two_records_are_a_permerror():
    dns = FakeDns().txt("far.test", "google-site-verification=abc")
    assert spf(dns, "192.0.2.7").result == "none"

    dns.txt("far.test", "v=spf1 -all", "v=spf1 +all")
    assert spf(dns, "192.0.2.7").result == "permerror"


def test_a_and_mx_match_the_domains_addresses_with_optional_prefix_lengths():
    dns = (
        FakeDns()
        .txt("far.test", "v=spf1 a mx:mail.far.test a:net.far.test/24 -all")
        .add("far.test", "A", "192.0.2.1")
        .add("mail.far.test", "MX", "mx1.far.test")
        .add("mx1.far.test", "A", "198.51.100.25")
        .add("net.far.test", "A", "203.0.113.9")
    )
    assert [spf(dns, ip).result for ip in ("192.0.2.1", "198.51.100.25", "203.0.113.200", "192.0.2.2")] == [
        "pass",
        "pass",
        "pass",
        "fail",
    ]


def test_a_with_a_v6_prefix_length_matches_the_clients_network():
    dns = FakeDns().txt("far.test", "v=spf1 a//64 -all").add("far.test", "AAAA", "2001:db8:1:2::1")
    assert spf(dns, "2001:db8:1:2::99").result == "pass"
    assert spf(dns, "2001:db8:1:3::1").result == "fail"


def test_include_passes_on_pass_only_and_an_include_without_record_is_a_permerror():
    dns = (
        FakeDns()
        .txt("far.test", "v=spf1 include:_spf.provider.test -all")
        .txt("_spf.provider.test", "v=spf1 ip4:192.0.2.0/24 ~all")
    )
    assert spf(dns, "192.0.2.9").result == "pass"
    assert spf(dns, "198.51.100.1").result == "fail"  # include's softfail is "no match"

    dns.records[("_spf.provider.test", "TXT")] = []
    assert spf(dns, "192.0.2.9").result == "permerror"


def test_a_dns_failure_anywhere_is_a_temperror():
    dns = FakeDns().txt("far.test", "v=spf1 include:_spf.provider.test -all")
    dns.failing.add("_spf.provider.test")
    assert spf(dns, "192.0.2.9").result == "temperror"

    dns.failing.add("far.test")
    assert spf(dns, "192.0.2.9").result == "temperror"


def test_redirect_applies_when_nothing_matched_and_a_redirect_to_nothing_is_a_permerror():
    dns = FakeDns().txt("far.test", "v=spf1 ip4:10.0.0.1 redirect=_spf.far.test").txt("_spf.far.test", "v=spf1 -all")
    assert spf(dns, "192.0.2.1").result == "fail"
    assert spf(dns, "10.0.0.1").result == "pass"

    dns.records[("_spf.far.test", "TXT")] = []
    assert spf(dns, "192.0.2.1").result == "permerror"


def test_redirect_is_ignored_in_a_record_with_all():
    dns = FakeDns().txt("far.test", "v=spf1 ?all redirect=_spf.far.test").txt("_spf.far.test", "v=spf1 +all")
    assert spf(dns, "192.0.2.1").result == "neutral"


def test_more_than_ten_dns_querying_terms_is_a_permerror():
    dns = FakeDns()
    chain = [f"l{i}.far.test" for i in range(11)]
    dns.txt("far.test", f"v=spf1 include:{chain[0]} -all")
    for current, following in zip(chain, [*chain[1:], None], strict=True):
        dns.txt(current, f"v=spf1 include:{following} -all" if following else "v=spf1 +all")
    result = spf(dns, "192.0.2.1")
    assert (result.result, "more than 10") == ("permerror", result.reason[:12])

    dns.records[(chain[-2], "TXT")] = ["v=spf1 +all"]  # ten includes: the limit itself is allowed
    assert spf(dns, "192.0.2.1").result == "pass"


def test_an_include_loop_ends_as_a_permerror():
    dns = FakeDns().txt("far.test", "v=spf1 include:far.test -all")
    assert spf(dns, "192.0.2.1").result == "permerror"


def test_more_than_two_void_lookups_is_a_permerror():
    dns = FakeDns().txt("far.test", "v=spf1 a:v1.far.test a:v2.far.test a:v3.far.test -all")
    result = spf(dns, "192.0.2.1")
    assert result.result == "permerror" and "void" in result.reason

    dns.records[("far.test", "TXT")] = ["v=spf1 a:v1.far.test a:v2.far.test -all"]
    assert spf(dns, "192.0.2.1").result == "fail"


def test_exists_with_macros_asks_the_expanded_name():
    dns = FakeDns().txt("far.test", "v=spf1 exists:%{ir}.%{l1-}.%{o}._spf.%{d2} -all")
    dns.add("7.2.0.192.bob.far.test._spf.far.test", "A", "127.0.0.2")
    assert spf(dns, "192.0.2.7", sender="x-bob@far.test").result == "pass"
    assert ("7.2.0.192.bob.far.test._spf.far.test", "A") in dns.asked


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("%{s}", "strong-bad@email.example.com"),
        ("%{o}", "email.example.com"),
        ("%{d}", "email.example.com"),
        ("%{d4}", "email.example.com"),
        ("%{d3}", "email.example.com"),
        ("%{d2}", "example.com"),
        ("%{d1}", "com"),
        ("%{dr}", "com.example.email"),
        ("%{d2r}", "example.email"),
        ("%{l}", "strong-bad"),
        ("%{l-}", "strong.bad"),
        ("%{lr}", "strong-bad"),
        ("%{lr-}", "bad.strong"),
        ("%{l1r-}", "strong"),
        ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
        ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
        ("%{h}", "mx.helo.example"),
        ("%%%_%-x", "% %20x"),
    ],
)
def test_macros_expand_as_rfc_7208_section_7_4_shows(macro, expanded):
    # The examples of RFC 7208 7.4 (sender strong-bad@email.example.com, client 192.0.2.3).
    dns = FakeDns().txt("email.example.com", f"v=spf1 exists:{macro}.x -all")
    asyncio.run(
        check_host("192.0.2.3", "email.example.com", "strong-bad@email.example.com", helo="mx.helo.example", lookup=dns)
    )
    assert (f"{expanded}.x".lower(), "A") in dns.asked


def test_the_i_macro_of_an_ipv6_client_is_its_nibbles():
    dns = FakeDns().txt("far.test", "v=spf1 exists:%{ir}.%{v}._spf.far.test -all")
    asyncio.run(check_host("2001:db8::cb01", "far.test", "bob@far.test", helo="h", lookup=dns))
    expected = "1.0.b.c." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6._spf.far.test"
    assert (expected, "A") in dns.asked


def test_ptr_matches_a_validated_reverse_name_in_the_domain():
    dns = (
        FakeDns()
        .txt("far.test", "v=spf1 ptr -all")
        .add("7.2.0.192.in-addr.arpa", "PTR", "mail.far.test", "liar.far.test")
        .add("mail.far.test", "A", "192.0.2.7")
        .add("liar.far.test", "A", "10.9.9.9")
    )
    assert spf(dns, "192.0.2.7").result == "pass"
    dns.records[("mail.far.test", "A")] = ["10.0.0.1"]  # the name does not resolve back: not validated
    assert spf(dns, "192.0.2.7").result == "fail"


def test_a_name_that_is_not_a_domain_is_none_without_a_lookup():
    dns = FakeDns()
    assert asyncio.run(check_host("192.0.2.1", "localhost", "x@localhost", helo="h", lookup=dns)).result == "none"
    assert asyncio.run(check_host("192.0.2.1", "192.0.2.1", "x@[192.0.2.1]", helo="h", lookup=dns)).result == "none"
    assert dns.asked == []


# -- the SMTP decisions ------------------------------------------------------------------------------------


def test_spf_refuses_only_a_fail_and_only_in_reject_mode():
    reject = SmtpPolicy(spf_action="reject")
    args = {"address": "bob@far.test", "domain": "far.test", "client_ip": "192.0.2.1"}
    assert spf_refusal(reject, "fail", **args) == replies.SPF_FAILED.format(
        address="bob@far.test", domain="far.test", client="192.0.2.1"
    )
    assert replies.SPF_FAILED.startswith("550 5.7.23 ")
    for result in ("pass", "softfail", "neutral", "none", "temperror", "permerror"):
        assert spf_refusal(reject, result, **args) is None, result
    assert spf_refusal(SmtpPolicy(spf_action="tag"), "fail", **args) is None


def test_dmarc_reject_and_quarantine_apply_only_when_honoured():
    honour = SmtpPolicy(dmarc_action="honour")
    assert dmarc_refusal(honour, "reject", "far.test") == replies.DMARC_REJECTED.format(domain="far.test")
    assert replies.DMARC_REJECTED.startswith("550 5.7.1 ")
    assert dmarc_refusal(honour, "quarantine", "far.test") is None
    assert dmarc_refusal(SmtpPolicy(), "reject", "far.test") is None
    assert dmarc_quarantines(honour, "quarantine") and not dmarc_quarantines(SmtpPolicy(), "quarantine")


def test_sender_authentication_is_off_by_default():
    assert not sender_auth_applies(SmtpPolicy())
    assert sender_auth_applies(SmtpPolicy(spf_action="tag"))
    assert sender_auth_applies(SmtpPolicy(dmarc_action="honour"))


# -- DMARC ---------------------------------------------------------------------------------------------------


def test_dmarc_records_are_parsed_with_their_defaults():
    assert parse_dmarc_record(["v=DMARC1; p=reject; sp=none; adkim=s; pct=50; rua=mailto:x@far.test"]) == (
        DmarcRecord("reject", "none", "s", "r", 50)
    )
    assert parse_dmarc_record(["v=DMARC1; p=quarantine"]) == DmarcRecord("quarantine", "quarantine")
    assert parse_dmarc_record(["v=DMARC1; p=bogus"]) == DmarcRecord("none", "none")
    assert parse_dmarc_record(["v=spf1 -all"]) is None
    assert parse_dmarc_record(["v=DMARC1; p=reject", "v=DMARC1; p=none"]) is None


def test_organisational_domains_come_from_the_bundled_public_suffix_list():
    assert organizational_domain("mail.news.example.co.uk") == "example.co.uk"
    assert organizational_domain("a.b.example.com") == "example.com"
    assert organizational_domain("far.test") == "far.test"
    assert aligned("bounce.example.com", "example.com", "r")
    assert not aligned("bounce.example.com", "example.com", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")


def test_from_domain_needs_exactly_one_author():
    assert from_domain(b"From: Bob <Bob@Far.TEST>\r\nSubject: x\r\n\r\nFrom: body@x.test\r\n") == "far.test"
    assert from_domain(b'From:\r\n "Bob, Jr." <bob@far.test>\r\n\r\n') == "far.test"
    assert from_domain(b"From: a@one.test, b@two.test\r\n\r\n") is None
    assert from_domain(b"From: a@one.test\r\nFrom: b@two.test\r\n\r\n") is None
    assert from_domain(b"Subject: no author\r\n\r\n") is None


SPF_PASS = SpfResult("pass", "bounces.far.test")
DKIM_PASS = DkimResult("pass", "far.test", "sel")
REJECT = DmarcRecord("reject", "reject")


def test_dmarc_passes_with_one_aligned_pass_and_fails_with_none():
    assert dmarc_outcome("far.test", REJECT, record_at_org=False, spf=SPF_PASS, dkim=[]).result == "pass"
    assert dmarc_outcome("far.test", REJECT, record_at_org=False, spf=None, dkim=[DKIM_PASS]).result == "pass"
    strict = dataclasses.replace(REJECT, aspf="s")
    failed = dmarc_outcome("far.test", strict, record_at_org=False, spf=SPF_PASS, dkim=[DkimResult("pass", "x.test")])
    assert (failed.result, failed.action, failed.published_policy) == ("fail", "reject", "reject")


def test_dmarc_fails_open_on_temporary_errors():
    temp = SpfResult("temperror", "far.test")
    assert dmarc_outcome("far.test", REJECT, record_at_org=False, spf=temp, dkim=[]).action == "none"
    assert dmarc_outcome("far.test", REJECT, record_at_org=False, spf=temp, dkim=[]).result == "temperror"
    unaligned = SpfResult("temperror", "slow.test")
    assert dmarc_outcome("far.test", REJECT, record_at_org=False, spf=unaligned, dkim=[]).action == "reject"
    key_failed = DkimResult("temperror", "mail.far.test")
    assert dmarc_outcome("far.test", REJECT, record_at_org=False, spf=None, dkim=[key_failed]).action == "none"
    failed_lookup = dmarc_outcome("far.test", None, record_at_org=False, spf=None, dkim=[], lookup_failed=True)
    assert (failed_lookup.result, failed_lookup.action) == ("temperror", "none")


def test_dmarc_uses_sp_for_a_subdomain_and_pct_samples_into_the_milder_policy():
    record = DmarcRecord("reject", "quarantine", pct=30)
    at_org = dmarc_outcome("news.far.test", record, record_at_org=True, spf=None, dkim=[], sample=10)
    assert (at_org.published_policy, at_org.action) == ("quarantine", "quarantine")
    outside = dmarc_outcome("far.test", record, record_at_org=False, spf=None, dkim=[], sample=30)
    assert (outside.result, outside.action) == ("fail", "quarantine")
    assert dmarc_outcome("far.test", None, record_at_org=False, spf=None, dkim=[]).result == "none"
    assert dmarc_outcome(None, record, record_at_org=False, spf=None, dkim=[]).result == "permerror"


# -- Authentication-Results --------------------------------------------------------------------------------


def test_the_header_lists_spf_dkim_and_dmarc_and_reads_back_in_plain_words():
    header = authentication_results(
        "mx.lab.test",
        spf=SpfResult("pass", "far.test", "ip4:192.0.2.0/24"),
        spf_sender="bob@far.test",
        dkim=[DKIM_PASS],
        dmarc=dmarc_outcome("far.test", REJECT, record_at_org=False, spf=SPF_PASS, dkim=[DKIM_PASS]),
    )
    text = header.decode()
    assert text.startswith("Authentication-Results: mx.lab.test;") and text.endswith("\r\n")
    unfolded = " ".join(text.split())
    for part in (
        "spf=pass",
        "smtp.mailfrom=bob@far.test",
        "dkim=pass header.d=far.test",
        "dmarc=pass header.from=far.test",
    ):
        assert part in unfolded
    value = text.split(":", 1)[1]
    check = sender_check([value], "MX.lab.test")
    assert check is not None and (check.verified, check.domain, check.spf, check.dkim, check.dmarc) == (
        True,
        "far.test",
        "pass",
        "pass",
        "pass",
    )


def test_a_failing_or_missing_check_reads_as_a_warning_or_as_nothing():
    failed = authentication_results(
        "mx.lab.test",
        spf=SpfResult("fail", "far.test"),
        dmarc=dmarc_outcome("far.test", REJECT, record_at_org=False, spf=SpfResult("fail", "far.test"), dkim=[]),
    ).decode()
    check = sender_check([failed.split(":", 1)[1]], "mx.lab.test")
    assert check is not None and (check.verified, check.dkim, check.dmarc) == (False, "none", "fail")
    none = authentication_results(
        "mx.lab.test",
        spf=SpfResult("none", "far.test"),
        dmarc=dmarc_outcome("far.test", None, record_at_org=False, spf=None, dkim=[]),
    ).decode()
    check = sender_check([none.split(":", 1)[1]], "mx.lab.test")
    assert check is not None and check.verified is None
    assert sender_check([" other.example; spf=pass smtp.mailfrom=a@far.test"], "mx.lab.test") is None


def test_a_reason_quoting_a_senders_record_cannot_break_the_header():
    reason = "redirect to a(b);c\r\nX-Injected: 1"
    header = authentication_results("mx.lab.test", spf=SpfResult("permerror", "far.test", reason)).decode()
    assert "X-Injected: 1\r\n" not in header and "(redirect to a?b??c??X-Injected: 1)" in header


def test_a_signed_in_sender_is_recorded_as_smtp_auth():
    header = authentication_results("mx.lab.test", signed_in_as="alice@lab.test").decode()
    assert " ".join(header.split()) == "Authentication-Results: mx.lab.test; auth=pass smtp.auth=alice@lab.test"


def test_incoming_results_naming_our_host_are_removed_and_others_kept():
    message = (
        b"Authentication-Results: MX.lab.test (forged);\r\n\tspf=pass smtp.mailfrom=ceo@lab.test\r\n"
        b"Authentication-Results: relay.far.test; dkim=pass\r\n"
        b"authentication-results: mx.lab.test 1; dmarc=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.lab.test; body text stays\r\n"
    )
    assert strip_our_results(message, "mx.lab.test") == (
        b"Authentication-Results: relay.far.test; dkim=pass\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mx.lab.test; body text stays\r\n"
    )
    untouched = b"Subject: x\r\n\r\nbody\r\n"
    assert strip_our_results(untouched, "mx.lab.test") is untouched


# -- the adapter's wiring, with the lookups faked -------------------------------------------------------------


class FakeAuth:
    """InboundAuth answering fixed results; records who was asked."""

    def __init__(self, spf_result: SpfResult, dmarc_action: str = "none") -> None:
        self.spf_result = spf_result
        self.dmarc_action = dmarc_action
        self.asked: list[str] = []

    async def spf(self, client_ip, mail_from, helo, dns_server):
        self.asked.append(f"spf {mail_from or helo}")
        return self.spf_result, "mailfrom" if mail_from else "helo"

    async def dkim_and_dmarc(self, message, spf, dns_server, *, sample):
        self.asked.append("dkim+dmarc")
        published = "reject" if self.dmarc_action != "none" else "none"
        return [], dmarc_outcome_of("far.test", self.dmarc_action, published)


def dmarc_outcome_of(domain: str, action: str, published: str):
    from servers.message_auth import DmarcOutcome

    return DmarcOutcome("fail", domain, published, action)


class FakeChecks:
    def __init__(self, auth: FakeAuth) -> None:
        self.auth = auth


def test_the_adapter_counts_and_logs_each_refusal_by_reason_and_exempts_signed_in_users(caplog):
    from servers.smtp import LocalDeliveryHandler, LocalEnvelope, WorkerCounters
    from tests.test_smtp_policy import FakeSession, hook, lab

    auth = FakeAuth(SpfResult("fail", "far.test"), dmarc_action="reject")
    on = LocalDeliveryHandler(
        lambda: lab(spf_action="reject", dmarc_action="honour"),
        WorkerCounters(),
        None,
        FakeChecks(auth),
    )
    session = type("Session", (), {"host_name": "mail.far.test"})()
    stranger = FakeSession(session_id="s1")

    with caplog.at_level("INFO", logger="servers.smtp"):
        reply = hook(on.handle_MAIL(stranger, session, LocalEnvelope(), "bob@far.test", []))
        envelope = LocalEnvelope()
        envelope.original_content = b"From: bob@far.test\r\n\r\nhi\r\n"
        header, refusal = hook(on._sender_auth(stranger, envelope))

    assert reply[:10] == "550 5.7.23" and refusal == replies.DMARC_REJECTED.format(domain="far.test")
    assert header == b""
    assert on.counters.refusals == {"spf": 1, "dmarc": 1}
    assert [r.message.split(": ", 1)[1][:20] for r in caplog.records] == [
        "refused (spf): 550 5",
        "refused (dmarc): 550",
    ]

    alice = FakeSession(session_id="s2", signed_in_as="alice@lab.test")
    asked_before = list(auth.asked)
    assert hook(on.handle_MAIL(alice, session, LocalEnvelope(), "alice@lab.test", [])) == "250 2.1.0 OK"
    envelope = LocalEnvelope()
    envelope.original_content = b"From: alice@lab.test\r\n\r\nhi\r\n"
    header, refusal = hook(on._sender_auth(alice, envelope))
    assert refusal is None and b"smtp.auth=alice@lab.test" in header
    assert auth.asked == asked_before
