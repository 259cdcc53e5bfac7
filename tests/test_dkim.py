"""DKIM keys of local domains (services, storage) and the signature the delivery engine adds."""

from __future__ import annotations

import logging
from io import StringIO

import dkim
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from dkim.canonicalization import CanonicalizationPolicy

from servers import dkim_signing, services, stored_secrets
from servers.delivery import client, signing
from servers.models import AuditEntry, DkimKey, DkimKeyState
from servers.services import dkim as dkim_keys
from servers.services.dkim import SigningKey
from tests.factories import default_domain_of, make_server

MESSAGE = (
    b"From: Alice <alice@lab.test>\r\nTo: bob@far.test\r\nSubject: Quarterly report\r\n"
    b"Date: Wed, 02 Dec 2026 15:00:00 +0000\r\nMessage-ID: <1@lab.test>\r\nList-Id: <team.lab.test>\r\n"
    b"X-Mailer: not signed\r\n\r\nLine one\r\n.a line starting with a dot\r\n"
)


def dns_answering(records: dict[str, str]):
    """A dkimpy dnsfunc that answers TXT queries from `records` (name -> value)."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return value.encode() if value is not None else None

    return dnsfunc


def published(domain) -> dict[str, str]:
    record = dkim_keys.dkim_record(domain)
    assert record is not None
    return {record.txt_name: record.txt_value}


# --- keys ------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_generated_key_is_encrypted_at_rest_and_shows_only_its_public_record():
    domain = default_domain_of(make_server(domain="lab.test"))
    key = services.generate_dkim_key(domain, actor="carol")

    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key FROM servers_dkimkey WHERE id = %s", [key.pk])
        (stored,) = cursor.fetchone()
    assert stored.startswith("fernet:") and "PRIVATE KEY" not in stored
    assert "BEGIN PRIVATE KEY" in stored_secrets.reveal(stored)
    record = dkim_keys.dkim_record(domain)
    assert record is not None
    assert record.selector == key.selector and record.selector.startswith("mc")
    assert record.txt_name == f"{key.selector}._domainkey.lab.test"
    assert record.txt_value == f"v=DKIM1; k=rsa; p={key.public_key}"
    assert "".join(record.txt_strings) == record.txt_value and max(map(len, record.txt_strings)) <= 255
    assert len(record.txt_strings) > 1  # an RSA-2048 record is longer than one TXT string
    entry = AuditEntry.objects.get(action="generate_dkim_key")
    assert entry.actor == "carol" and "PRIVATE" not in str(entry.after)


@pytest.mark.django_db
def test_a_second_generate_is_refused_and_rotation_keeps_the_old_selector_retired():
    domain = default_domain_of(make_server(domain="lab.test"))
    first = services.generate_dkim_key(domain)
    with pytest.raises(services.RefusedError, match="rotate"):
        services.generate_dkim_key(domain)

    second = services.rotate_dkim_key(domain)

    first.refresh_from_db()
    assert second.selector != first.selector
    assert (first.state, second.state) == (DkimKeyState.RETIRED, DkimKeyState.ACTIVE)
    record = dkim_keys.dkim_record(domain)
    assert record is not None and record.selector == second.selector
    assert record.retired_selectors == [first.selector]


@pytest.mark.django_db
def test_removing_retired_keys_leaves_the_active_one():
    domain = default_domain_of(make_server(domain="lab.test"))
    services.generate_dkim_key(domain)
    services.rotate_dkim_key(domain)
    active = services.rotate_dkim_key(domain)

    removed = services.remove_retired_dkim_keys(domain, actor="bob")

    assert len(removed) == 2
    assert list(DkimKey.objects.filter(domain=domain)) == [active]
    assert AuditEntry.objects.filter(action="remove_dkim_key", actor="bob").count() == 2


@pytest.mark.django_db
def test_an_ed25519_key_publishes_k_ed25519():
    domain = default_domain_of(make_server(domain="lab.test"))
    services.generate_dkim_key(domain, algorithm="ed25519-sha256")
    record = dkim_keys.dkim_record(domain)
    assert record is not None and record.txt_value.startswith("v=DKIM1; k=ed25519; p=")
    assert record.txt_strings == [record.txt_value]


@pytest.mark.django_db
def test_only_local_domains_get_keys_and_aliases_show_their_targets_record():
    server = make_server(domain="lab.test")
    alias = services.add_domain(server, "alias.test", type="alias", alias_of="lab.test")
    remote = services.add_domain(server, "far.test", type="remote")
    for domain in (alias, remote):
        with pytest.raises(services.RefusedError, match="Only a local domain"):
            services.rotate_dkim_key(domain)
    with pytest.raises(services.RefusedError, match="not a DKIM algorithm"):
        services.generate_dkim_key(default_domain_of(server), algorithm="rsa-sha1")
    assert dkim_keys.dkim_record(alias) is None

    key = services.generate_dkim_key(default_domain_of(server))

    record = dkim_keys.dkim_record(alias)
    assert record is not None and record.txt_name == f"{key.selector}._domainkey.alias.test"
    keys = dkim_keys.signing_keys_of_server(server)
    assert set(keys) == {"lab.test", "alias.test"}
    assert keys["alias.test"].selector == key.selector and keys["alias.test"].domain == "alias.test"


@pytest.mark.django_db
def test_selectors_stay_unique_when_rotated_several_times_a_day():
    domain = default_domain_of(make_server(domain="lab.test"))
    selectors = [services.rotate_dkim_key(domain).selector for _ in range(4)]
    assert len(set(selectors)) == 4
    assert selectors[1] == selectors[0] + "b"


# --- signing ---------------------------------------------------------------------------------------


def _signing_key(domain: str, algorithm: str = dkim_signing.RSA) -> tuple[SigningKey, str]:
    pem, public = dkim_signing.generate_key_pair(algorithm)
    return SigningKey(domain=domain, selector="mc1", algorithm=algorithm, private_pem=pem), dkim_signing.txt_value(
        algorithm, public
    )


def test_a_message_from_a_signing_domain_verifies_with_dkimpy_and_signs_the_chosen_fields():
    key, txt = _signing_key("lab.test")
    signed = signing.signed(MESSAGE, "alice@lab.test", {"lab.test": key})

    assert dkim.verify(signed, dnsfunc=dns_answering({"mc1._domainkey.lab.test": txt}))
    fields = dkim.util.parse_tag_value(dkim.rfc822_parse(signed)[0][0][1])
    assert (fields[b"d"], fields[b"s"], fields[b"c"], fields[b"a"]) == (
        b"lab.test",
        b"mc1",
        b"relaxed/relaxed",
        b"rsa-sha256",
    )
    signed_names = fields[b"h"].split(b":")
    assert signed_names == [b"from", b"to", b"subject", b"date", b"message-id", b"list-id", b"from"]


def test_a_message_with_bare_cr_and_lf_is_signed_as_the_smtp_client_sends_it():
    key, txt = _signing_key("lab.test")
    message = b"From: alice@lab.test\nSubject: mixed line ends\n\nline one\rline two\r\nlast, no newline   "

    on_the_wire = client.wire_data(signing.signed(message, "alice@lab.test", {"lab.test": key}))

    assert dkim.verify(on_the_wire[: -len(b".\r\n")], dnsfunc=dns_answering({"mc1._domainkey.lab.test": txt}))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"\r\n\r\n",
        b" \r\n\t\r\n",
        b"plain text\r\nsecond line\r\n",
        b"no final line end",
        b"trailing  \t \r\nin  the\tmiddle\t\t x\r\n\r\n\r\n",
        b"last line with spaces   ",
        b"\tindented\r\n  two\r\n",
    ],
)
def test_the_relaxed_body_is_the_one_dkimpy_computes(body):
    assert dkim_signing.canonical_body(body) == CanonicalizationPolicy.from_c_value(
        b"relaxed/relaxed"
    ).canonicalize_body(body)


def test_a_changed_body_or_an_added_from_breaks_the_signature():
    key, txt = _signing_key("lab.test")
    dns = dns_answering({"mc1._domainkey.lab.test": txt})
    signed = signing.signed(MESSAGE, "alice@lab.test", {"lab.test": key})
    assert not dkim.verify(signed.replace(b"Line one", b"Line 1"), dnsfunc=dns)
    head, _, body = signed.partition(b"\r\n\r\n")
    assert not dkim.verify(head + b"\r\nFrom: mallory@evil.test\r\n\r\n" + body, dnsfunc=dns)


def test_the_from_domain_signs_before_the_envelope_sender_and_strangers_stay_unsigned():
    ours, _ = _signing_key("lab.test")
    lists, _ = _signing_key("lists.test")
    keys = {"lab.test": ours, "lists.test": lists}
    forwarded = MESSAGE.replace(b"alice@lab.test", b"someone@elsewhere.test")

    def d_of(message: bytes) -> bytes:
        return dkim.util.parse_tag_value(dkim.rfc822_parse(message)[0][0][1])[b"d"]

    assert d_of(signing.signed(MESSAGE, "bounces@lists.test", keys)) == b"lab.test"
    assert d_of(signing.signed(forwarded, "bounces@lists.test", keys)) == b"lists.test"
    assert signing.signed(forwarded, "someone@elsewhere.test", keys) == forwarded
    assert signing.signed(MESSAGE, "", {}) == MESSAGE


def test_an_internationalised_from_domain_signs_with_the_key_of_its_a_label():
    key, txt = _signing_key("xn--80a1acny.xn--p1ai")  # почта.рф
    message = "From: Анна <anna@почта.рф>\r\nSubject: привет\r\n\r\nbody\r\n".encode()

    signed = signing.signed(message, "anna@xn--80a1acny.xn--p1ai", {"xn--80a1acny.xn--p1ai": key})

    assert dkim.util.parse_tag_value(dkim.rfc822_parse(signed)[0][0][1])[b"d"] == b"xn--80a1acny.xn--p1ai"
    assert signing.signed(message, "", {"xn--80a1acny.xn--p1ai": key}).startswith(b"DKIM-Signature:")


def test_a_signing_error_sends_the_message_unsigned_and_logs_it(caplog):
    broken = SigningKey(domain="lab.test", selector="mc1", algorithm="rsa-sha256", private_pem="not a key")
    no_from = b"To: bob@far.test\r\nSubject: no author\r\n\r\nbody\r\n"
    key, _ = _signing_key("lab.test")
    with caplog.at_level(logging.WARNING, logger="servers.delivery.signing"):
        assert signing.signed(MESSAGE, "alice@lab.test", {"lab.test": broken}) == MESSAGE
        assert signing.signed(no_from, "alice@lab.test", {"lab.test": key}) == no_from
    assert caplog.text.count("sent unsigned") == 2


def test_an_ed25519_signature_has_the_rfc_8463_shape():
    key, txt = _signing_key("lab.test", dkim_signing.ED25519)
    signed = signing.signed(MESSAGE, "alice@lab.test", {"lab.test": key})
    fields = dkim.util.parse_tag_value(dkim.rfc822_parse(signed)[0][0][1])
    assert fields[b"a"] == b"ed25519-sha256"
    assert len(dkim.util.parse_tag_value(txt.encode())[b"p"]) == 44  # base64 of the raw 32-byte key


# --- the command line --------------------------------------------------------------------------------


def smtpsvc_dkim(*arguments: str) -> str:
    out = StringIO()
    call_command("smtpsvc", "dkim", *arguments, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_the_command_line_generates_shows_rotates_and_removes_retired_keys():
    domain = default_domain_of(make_server(domain="lab.test"))
    assert "has no DKIM key" in smtpsvc_dkim("lab.test", "show")

    generated = smtpsvc_dkim("lab.test", "generate")
    first = DkimKey.objects.get(domain=domain)
    assert f"name:  {first.selector}._domainkey.lab.test" in generated
    assert f"value: v=DKIM1; k=rsa; p={first.public_key}" in generated
    assert f'zone file: {first.selector}._domainkey.lab.test. IN TXT ( "v=DKIM1; k=rsa; p=' in generated
    assert smtpsvc_dkim("LAB.test", "show") == generated
    with pytest.raises(CommandError, match="rotate it instead"):
        smtpsvc_dkim("lab.test", "generate")

    rotated = smtpsvc_dkim("lab.test", "rotate", "--algorithm", "ed25519-sha256")
    assert "(ed25519-sha256)" in rotated and f"Retired selectors: {first.selector}" in rotated
    assert smtpsvc_dkim("lab.test", "remove-retired").startswith("Removed 1 retired DKIM key(s) of lab.test")
    assert "PRIVATE" not in generated + rotated
    assert AuditEntry.objects.filter(actor="cli", action__endswith="dkim_key").count() == 3


@pytest.mark.django_db
def test_the_command_line_asks_for_the_server_when_two_have_the_domain():
    make_server(domain="lab.test")
    second = make_server(domain="lab.test")
    with pytest.raises(CommandError, match="--server"):
        smtpsvc_dkim("lab.test", "generate")
    with pytest.raises(CommandError, match="No server"):
        smtpsvc_dkim("nowhere.test", "show")
    assert "lab.test" in smtpsvc_dkim("lab.test", "generate", "--server", str(second.pk))
    assert DkimKey.objects.get().domain.server == second
