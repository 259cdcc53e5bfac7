"""DNS readiness evaluated without sockets: a setup, the answers DNS gave, and what each check says."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from servers.services.dns_readiness import (
    MISSING,
    OK,
    PENDING,
    UNKNOWN,
    WRONG,
    Answer,
    DkimSelector,
    DomainSetup,
    Listener,
    ZoneRecord,
    evaluate,
)

pytestmark = pytest.mark.backend_independent

PUBLIC_KEY = "MCowBQYDK2VwAyEAq0u7Tn1d0cVqRlTVxHkV1nZzT8nQ3Ff6m8cF9f1v0dE="
OLD_KEY = "MCowBQYDK2VwAyEAb2xka2V5b2xka2V5b2xka2V5b2xka2V5b2xka2V5b2w="

SETUP = DomainSetup(
    domain="example.test",
    hostname="mail.example.test",
    node="node1",
    smtp=Listener("192.0.2.10", 25, 465),
    node_addresses=("127.0.0.1", "192.0.2.10"),
    imap=Listener("0.0.0.0", 143, 993),
    pop3=Listener("0.0.0.0", 110, None),
    dkim_active=DkimSelector("mc20261202", "ed25519-sha256", PUBLIC_KEY),
    checked_at=datetime(2026, 12, 2, 18, 0, tzinfo=UTC),
)


def good_answers() -> dict[tuple[str, str], Answer]:
    """Everything published as it should be."""
    answers = {
        ("example.test", "MX"): Answer(("10 mail.example.test",)),
        ("mail.example.test", "A"): Answer(("192.0.2.10",)),
        ("mail.example.test", "AAAA"): Answer(),
        ("10.2.0.192.in-addr.arpa", "PTR"): Answer(("mail.example.test",)),
        ("example.test", "TXT"): Answer(("google-site-verification=abc", "v=spf1 mx -all")),
        ("mc20261202._domainkey.example.test", "TXT"): Answer((f"v=DKIM1; k=ed25519; p={PUBLIC_KEY}",)),
        ("_dmarc.example.test", "TXT"): Answer(("v=DMARC1; p=quarantine; rua=mailto:d@example.test",)),
        ("_mta-sts.example.test", "TXT"): Answer(("v=STSv1; id=20261202",)),
        ("_smtp._tls.example.test", "TXT"): Answer(("v=TLSRPTv1; rua=mailto:tls@example.test",)),
        ("autoconfig.example.test", "CNAME"): Answer(("mail.example.test",)),
        ("autoconfig.example.test", "A"): Answer(("192.0.2.10",)),
        ("autoconfig.example.test", "AAAA"): Answer(),
        ("autodiscover.example.test", "CNAME"): Answer(),
        ("autodiscover.example.test", "A"): Answer(("192.0.2.10",)),
        ("autodiscover.example.test", "AAAA"): Answer(),
        ("_submission._tcp.example.test", "SRV"): Answer(("0 1 25 mail.example.test",)),
        ("_submissions._tcp.example.test", "SRV"): Answer(("0 1 465 mail.example.test",)),
        ("_imap._tcp.example.test", "SRV"): Answer(("0 1 143 mail.example.test",)),
        ("_imaps._tcp.example.test", "SRV"): Answer(("0 1 993 mail.example.test",)),
        ("_pop3._tcp.example.test", "SRV"): Answer(("0 1 110 mail.example.test",)),
        ("_pop3s._tcp.example.test", "SRV"): Answer(),
    }
    return answers


def by_key(setup: DomainSetup, answers) -> dict:
    return {check.key: check for check in evaluate(setup, answers).checks}


def test_a_domain_with_every_record_published_is_ok_everywhere_and_wants_nothing_more():
    evaluation = evaluate(SETUP, good_answers())

    assert evaluation.wanted == frozenset()
    assert {check.key: check.status for check in evaluation.checks if check.status != OK} == {}
    keys = [check.key for check in evaluation.checks]
    assert keys == [
        "mx",
        "ptr",
        "spf",
        "dkim",
        "dmarc",
        "mta-sts",
        "tls-rpt",
        "autoconfig",
        "autodiscover",
        "srv-submission",
        "srv-submissions",
        "srv-imap",
        "srv-imaps",
        "srv-pop3",
        "srv-pop3s",
    ]
    assert all(check.publish == () for check in evaluation.checks)
    checks = by_key(SETUP, good_answers())
    assert "mail.example.test (192.0.2.10)" in checks["mx"].explanation
    assert "192.0.2.10 (mx)" in checks["spf"].explanation
    assert "no POP3S" in checks["srv-pop3s"].explanation


def test_with_no_answers_yet_the_first_round_asks_every_independent_record():
    wanted = evaluate(SETUP, {}).wanted

    assert {
        ("example.test", "MX"),
        ("example.test", "TXT"),
        ("10.2.0.192.in-addr.arpa", "PTR"),
        ("mc20261202._domainkey.example.test", "TXT"),
        ("_dmarc.example.test", "TXT"),
        ("_imaps._tcp.example.test", "SRV"),
        ("autodiscover.example.test", "CNAME"),
    } <= wanted
    assert ("mail.example.test", "A") not in wanted  # the MX host is asked once its name is known


def test_missing_records_say_missing_with_the_zone_line_to_publish():
    answers = {query: Answer() for query in good_answers()}

    checks = by_key(SETUP, answers)

    assert checks["mx"].status == MISSING
    assert checks["mx"].publish == (ZoneRecord("example.test.", 3600, "MX", "10 mail.example.test."),)
    assert checks["ptr"].status == MISSING
    assert checks["ptr"].publish[0].zone_line == "10.2.0.192.in-addr.arpa. 3600 IN PTR mail.example.test."
    assert checks["spf"].status == MISSING
    assert checks["spf"].publish[0].zone_line == 'example.test. 3600 IN TXT "v=spf1 mx ip4:192.0.2.10 ~all"'
    assert checks["dkim"].status == MISSING
    assert checks["dkim"].publish[0].zone_line == (
        f'mc20261202._domainkey.example.test. 3600 IN TXT "v=DKIM1; k=ed25519; p={PUBLIC_KEY}"'
    )
    assert checks["dmarc"].publish[0].zone_line == (
        '_dmarc.example.test. 3600 IN TXT "v=DMARC1; p=none; rua=mailto:postmaster@example.test"'
    )
    assert checks["mta-sts"].publish[0].zone_line == '_mta-sts.example.test. 3600 IN TXT "v=STSv1; id=20261202180000"'
    assert checks["tls-rpt"].publish[0].value == "v=TLSRPTv1; rua=mailto:postmaster@example.test"
    assert checks["autoconfig"].publish[0].zone_line == "autoconfig.example.test. 3600 IN CNAME mail.example.test."
    assert (
        checks["srv-imaps"].publish[0].zone_line == "_imaps._tcp.example.test. 3600 IN SRV 0 1 993 mail.example.test."
    )
    assert checks["srv-submission"].publish[0].value == "0 1 25 mail.example.test."
    assert checks["srv-pop3s"].status == OK  # POP3S is not offered: nothing to publish
    assert all(check.status in (MISSING, OK) for check in checks.values())


def test_an_mx_pointing_elsewhere_is_wrong_and_names_the_addresses():
    answers = good_answers() | {
        ("example.test", "MX"): Answer(("10 mx.elsewhere.test",)),
        ("mx.elsewhere.test", "A"): Answer(("198.51.100.7",)),
        ("mx.elsewhere.test", "AAAA"): Answer(),
    }

    check = by_key(SETUP, answers)["mx"]

    assert check.status == WRONG
    assert "mx.elsewhere.test → 198.51.100.7" in check.explanation and "192.0.2.10:25" in check.explanation
    assert [r.zone_line for r in check.publish] == [
        "example.test. 3600 IN MX 10 mail.example.test.",
        "mail.example.test. 3600 IN A 192.0.2.10",
    ]


def test_a_null_mx_is_wrong_and_a_server_off_port_25_is_wrong_even_when_the_address_matches():
    null_mx = good_answers() | {("example.test", "MX"): Answer(("0 .",))}
    assert by_key(SETUP, null_mx)["mx"].status == WRONG

    on_2525 = dataclasses.replace(SETUP, smtp=Listener("192.0.2.10", 2525))
    check = by_key(on_2525, good_answers())["mx"]
    assert check.status == WRONG and "port 2525" in check.explanation


def test_a_server_on_every_address_matches_the_mx_against_the_nodes_addresses():
    wildcard = dataclasses.replace(SETUP, smtp=Listener("0.0.0.0", 25))
    assert by_key(wildcard, good_answers())["mx"].status == OK

    elsewhere = dataclasses.replace(wildcard, node_addresses=("192.0.2.99",))
    assert by_key(elsewhere, good_answers())["mx"].status == WRONG

    other_node = dataclasses.replace(wildcard, node_addresses=None)
    check = by_key(other_node, good_answers())["mx"]
    assert check.status == OK and "cannot tell" in check.explanation


def test_a_ptr_naming_another_host_or_not_resolving_back_is_wrong():
    other_name = good_answers() | {("10.2.0.192.in-addr.arpa", "PTR"): Answer(("host-10.isp.test",))}
    check = by_key(SETUP, other_name)["ptr"]
    assert check.status == WRONG and "host-10.isp.test" in check.explanation
    assert check.publish[0].value == "mail.example.test."

    not_back = good_answers() | {("mail.example.test", "A"): Answer(("192.0.2.77",))}
    check = by_key(SETUP, not_back)["ptr"]
    assert check.status == WRONG and "does not resolve to it" in check.explanation


@pytest.mark.parametrize(
    ("record", "status"),
    [
        ("v=spf1 ip4:192.0.2.0/24 -all", OK),
        ("v=spf1 ip4:192.0.2.10 -all", OK),
        ("v=spf1 a:mail.example.test -all", OK),
        ("v=spf1 a/24 -all", OK),
        ("v=spf1 mx -all", OK),
        ("v=spf1 mx:example.test/28 ~all", OK),
        ("v=spf1 include:_spf.provider.test ~all", OK),
        ("v=spf1 redirect=_spf.provider.test", OK),
        ("v=spf1 ip4:198.51.100.0/24 -all", WRONG),
        ("v=spf1 -ip4:192.0.2.10 mx -all", WRONG),
        ("v=spf1 ~all", WRONG),
        ("v=spf1 include:_nested.provider.test -all", WRONG),
    ],
)
def test_spf_mechanisms_are_evaluated_for_the_listening_address(record, status):
    answers = good_answers() | {
        ("example.test", "TXT"): Answer((record,)),
        ("example.test", "A"): Answer(("192.0.2.3",)),
        ("example.test", "AAAA"): Answer(),
        ("_spf.provider.test", "TXT"): Answer(("v=spf1 ip4:198.51.100.0/24 ip4:192.0.2.8/29 -all",)),
        ("_nested.provider.test", "TXT"): Answer(("v=spf1 include:_spf.provider.test -all",)),
    }

    check = by_key(SETUP, answers)["spf"]

    assert check.status == status, check.explanation
    assert check.found == (record,)


def test_a_wrong_spf_record_gets_the_address_added_in_front_and_says_what_was_not_evaluated():
    answers = good_answers() | {("example.test", "TXT"): Answer(("v=spf1 exists:%{i}.bl.test include:x.test ~all",))}
    answers[("x.test", "TXT")] = Answer(("v=spf1 -all",))

    check = by_key(SETUP, answers)["spf"]

    assert check.status == WRONG
    assert "ip4, ip6, a, mx, include, all" in check.explanation and "exists:%{i}.bl.test" in check.explanation
    assert check.publish[0].value == "v=spf1 ip4:192.0.2.10 exists:%{i}.bl.test include:x.test ~all"


def test_two_spf_records_are_wrong():
    answers = good_answers() | {("example.test", "TXT"): Answer(("v=spf1 mx -all", "v=spf1 a -all"))}

    check = by_key(SETUP, answers)["spf"]

    assert check.status == WRONG and "Keep exactly one" in check.explanation


def test_a_dkim_record_with_another_key_is_wrong_and_a_revoked_one_says_so():
    other = good_answers() | {
        ("mc20261202._domainkey.example.test", "TXT"): Answer((f"v=DKIM1; k=ed25519; p={OLD_KEY}",))
    }
    assert by_key(SETUP, other)["dkim"].status == WRONG

    wrong_type = good_answers() | {("mc20261202._domainkey.example.test", "TXT"): Answer((f"v=DKIM1; p={PUBLIC_KEY}",))}
    assert by_key(SETUP, wrong_type)["dkim"].status == WRONG  # no k= means rsa

    revoked = good_answers() | {("mc20261202._domainkey.example.test", "TXT"): Answer(("v=DKIM1; k=ed25519; p=",))}
    check = by_key(SETUP, revoked)["dkim"]
    assert check.status == WRONG and "revoked" in check.explanation


def test_a_key_split_into_several_strings_with_spaces_matches():
    split = PUBLIC_KEY[:20] + " " + PUBLIC_KEY[20:]
    answers = good_answers() | {
        ("mc20261202._domainkey.example.test", "TXT"): Answer((f"v=DKIM1; k=ed25519; p={split}",))
    }

    assert by_key(SETUP, answers)["dkim"].status == OK


def test_after_a_rotation_an_unpublished_active_key_is_pending_and_retired_selectors_are_shown():
    rotated = dataclasses.replace(
        SETUP,
        dkim_rotated=True,
        dkim_retired=(DkimSelector("mc20261101", "ed25519-sha256", OLD_KEY),),
    )
    answers = good_answers() | {
        ("mc20261202._domainkey.example.test", "TXT"): Answer(),
        ("mc20261101._domainkey.example.test", "TXT"): Answer((f"v=DKIM1; k=ed25519; p={OLD_KEY}",)),
    }

    checks = by_key(rotated, answers)

    assert checks["dkim"].status == PENDING
    assert checks["dkim"].explanation.startswith("Pending — publish this record")
    assert checks["dkim"].publish[0].name == "mc20261202._domainkey.example.test."
    retired = checks["dkim-retired-mc20261101"]
    assert retired.status == OK and "still published" in retired.explanation


def test_a_domain_without_a_dkim_key_is_missing_without_a_record():
    check = by_key(dataclasses.replace(SETUP, dkim_active=None), good_answers())["dkim"]

    assert check.status == MISSING and check.publish == () and "Generate one" in check.explanation


@pytest.mark.parametrize(
    ("key", "name", "value", "status"),
    [
        ("dmarc", "_dmarc.example.test", "v=DMARC1; rua=mailto:x@example.test", WRONG),
        ("dmarc", "_dmarc.example.test", "v=DMARC1; p=maybe", WRONG),
        ("dmarc", "_dmarc.example.test", "v=DMARC1;p=reject", OK),
        ("dmarc", "_dmarc.example.test", "v=spf1 -all", MISSING),
        ("mta-sts", "_mta-sts.example.test", "v=STSv1; id=", WRONG),
        ("mta-sts", "_mta-sts.example.test", "v=STSv1; id=abc-def", WRONG),
        ("mta-sts", "_mta-sts.example.test", "v=STSv1;id=2026a", OK),
        ("tls-rpt", "_smtp._tls.example.test", "v=TLSRPTv1;", WRONG),
        ("tls-rpt", "_smtp._tls.example.test", "v=TLSRPTv1; rua=ftp://x", WRONG),
        ("tls-rpt", "_smtp._tls.example.test", "v=TLSRPTv1; rua=https://r.test/tls", OK),
    ],
)
def test_policy_records_need_their_version_and_tags(key, name, value, status):
    answers = good_answers() | {(name, "TXT"): Answer((value,))}

    assert by_key(SETUP, answers)[key].status == status


def test_srv_records_on_the_wrong_port_or_for_a_service_not_offered_are_wrong():
    answers = good_answers() | {
        ("_imap._tcp.example.test", "SRV"): Answer(("0 1 1143 mail.example.test",)),
        ("_pop3s._tcp.example.test", "SRV"): Answer(("0 1 995 mail.example.test",)),
    }

    checks = by_key(SETUP, answers)

    assert checks["srv-imap"].status == WRONG and "port 143" in checks["srv-imap"].explanation
    assert checks["srv-pop3s"].status == WRONG
    assert checks["srv-pop3s"].publish[0].value == "0 0 0 ."


def test_without_an_imap_service_its_srv_records_are_not_wanted():
    no_imap = dataclasses.replace(SETUP, imap=None)
    checks = by_key(no_imap, good_answers() | {("_imap._tcp.example.test", "SRV"): Answer()})

    assert checks["srv-imap"].status == OK and "no IMAP" in checks["srv-imap"].explanation


def test_unanswered_lookups_read_could_not_ask_dns_on_every_check():
    checks = evaluate(SETUP, {}).checks

    assert {check.status for check in checks} == {UNKNOWN}
    assert all(check.explanation.startswith("could not ask DNS: timeout") for check in checks)


def test_a_servfail_is_reported_as_such():
    answers = good_answers() | {("_dmarc.example.test", "TXT"): Answer(error="SERVFAIL")}

    check = by_key(SETUP, answers)["dmarc"]

    assert (check.status, check.explanation) == (UNKNOWN, "could not ask DNS: SERVFAIL")


def test_long_txt_values_are_split_into_quoted_strings_of_255_octets():
    record = ZoneRecord("s._domainkey.example.test.", 3600, "TXT", "p=" + "A" * 400)

    strings = record.zone_value.split(" ")

    assert strings == ['"p=' + "A" * 253 + '"', '"' + "A" * 147 + '"']
