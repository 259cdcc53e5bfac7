"""DNS readiness through its faces — `GET /api/v1/domains/{id}/dns-check/`, the console page and
`smtpsvc dns-check` — against a DNS server on loopback publishing good, missing and wrong records,
and against one that never answers."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from dnslib import QTYPE, RCODE, RR, DNSRecord
from dnslib.server import BaseResolver

from servers import services
from servers.delivery.models import DeliverySettings
from servers.inbound_checks import make_resolver
from servers.models import Domain
from servers.services import dns_readiness
from servers.services.dkim import dkim_record
from tests.api_factories import client_for
from tests.delivery_helpers import TestDNS
from tests.factories import make_imap_service, make_user
from tests.panel_helpers import Cast, make_cast

pytestmark = pytest.mark.usefixtures("fast_hashing")

HOSTNAME = "mail.lab.example.test"
DOMAIN = "dora.example.test"


class _ZoneResolver(BaseResolver):
    """Answers from zone-file lines; an A/AAAA question about a CNAME gets the chain."""

    def __init__(self, zone: ZoneDNS) -> None:
        self.zone = zone

    def resolve(self, request: DNSRecord, handler):
        reply = request.reply()
        records = [RR.fromZone(line)[0] for line in self.zone.lines]
        name = str(request.q.qname).lower()
        qtype = QTYPE[request.q.qtype]
        self.zone.queries.append((name.rstrip("."), qtype))
        for _hop in range(5):
            here = [rr for rr in records if str(rr.rname).lower() == name]
            if not here:
                if not reply.rr:
                    reply.header.rcode = RCODE.NXDOMAIN
                return reply
            for rr in here:
                if QTYPE[rr.rtype] == qtype:
                    reply.add_answer(rr)
            cname = [rr for rr in here if QTYPE[rr.rtype] == "CNAME"]
            if reply.rr and QTYPE[reply.rr[-1].rtype] == qtype or not cname or qtype == "CNAME":
                return reply
            reply.add_answer(cname[0])
            name = str(cname[0].rdata.label).lower()
        return reply


class ZoneDNS(TestDNS):
    """TestDNS answering from `lines` ("name. 60 IN TYPE data"), for every record type dnslib parses."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.server.server.resolver = _ZoneResolver(self)


@pytest.fixture
def zone():
    server = ZoneDNS().start()
    yield server
    server.stop()


@pytest.fixture
def cast(db, settings, zone) -> Cast:
    """The cast, its server on 127.0.0.1:25 greeting as mail.lab.example.test and asking `zone`, an IMAP service
    (143/993 on this node) and a DKIM key for dora.example.test."""
    settings.MAIL_HOSTNAME = HOSTNAME
    cast = make_cast()
    services.update_virtual_server(cast.server, port=25, actor="test")
    config = DeliverySettings.for_server(cast.server)
    config.dns_server = zone.address
    config.save()
    make_imap_service(port=143, tls_port=993, start=False)
    services.generate_dkim_key(cast.domain, algorithm="ed25519-sha256", actor="test")
    return cast


def good_zone(domain: Domain) -> list[str]:
    record = dkim_record(domain)
    assert record is not None
    return [
        f"{DOMAIN}. 60 IN MX 10 {HOSTNAME}.",
        f"{HOSTNAME}. 60 IN A 127.0.0.1",
        f"1.0.0.127.in-addr.arpa. 60 IN PTR {HOSTNAME}.",
        f'{DOMAIN}. 60 IN TXT "v=spf1 mx -all"',
        f'{record.txt_name}. 60 IN TXT "{record.txt_value}"',
        f'_dmarc.{DOMAIN}. 60 IN TXT "v=DMARC1; p=reject"',
        f'_mta-sts.{DOMAIN}. 60 IN TXT "v=STSv1; id=1"',
        f'_smtp._tls.{DOMAIN}. 60 IN TXT "v=TLSRPTv1; rua=mailto:tls@{DOMAIN}"',
        f"autoconfig.{DOMAIN}. 60 IN CNAME {HOSTNAME}.",
        f"autodiscover.{DOMAIN}. 60 IN CNAME {HOSTNAME}.",
        f"_submission._tcp.{DOMAIN}. 60 IN SRV 0 1 25 {HOSTNAME}.",
        f"_imap._tcp.{DOMAIN}. 60 IN SRV 0 1 143 {HOSTNAME}.",
        f"_imaps._tcp.{DOMAIN}. 60 IN SRV 0 1 993 {HOSTNAME}.",
    ]


def statuses(body: dict) -> dict[str, str]:
    return {check["key"]: check["status"] for check in body["checks"]}


def test_a_domain_with_everything_published_is_ok_in_the_api(cast, zone):
    zone.lines = good_zone(cast.domain)

    response = client_for(cast.dora).get(f"/api/v1/domains/{cast.domain.pk}/dns-check/")

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(statuses(body).values()) == {"ok"}, [c for c in body["checks"] if c["status"] != "ok"]
    assert body["ok"] is True and body["problems"] == 0 and body["resolver"] == zone.address
    assert ("dora.example.test", "MX") in zone.queries and ("1.0.0.127.in-addr.arpa", "PTR") in zone.queries


def test_missing_and_wrong_records_come_back_with_the_lines_to_publish(cast, zone):
    zone.lines = [
        line for line in good_zone(cast.domain) if not line.startswith(("_dmarc.", "_imaps.", "mc", "autodiscover."))
    ] + [f"_pop3._tcp.{DOMAIN}. 60 IN SRV 0 1 110 {HOSTNAME}."]
    zone.lines = [line.replace("v=spf1 mx -all", "v=spf1 ip4:192.0.2.0/24 -all") for line in zone.lines]
    zone.lines = [line.replace("SRV 0 1 143", "SRV 0 1 1430") for line in zone.lines]

    body = client_for(cast.oscar).get(f"/api/v1/domains/{cast.domain.pk}/dns-check/").json()

    found = statuses(body)
    assert {key: found[key] for key in found if found[key] != "ok"} == {
        "spf": "wrong",
        "dkim": "missing",
        "dmarc": "missing",
        "autodiscover": "missing",
        "srv-imap": "wrong",
        "srv-imaps": "missing",
        "srv-pop3": "wrong",  # no POP3 service on this node
    }
    checks = {check["key"]: check for check in body["checks"]}
    assert checks["spf"]["publish"] == [
        {
            "name": f"{DOMAIN}.",
            "ttl": 3600,
            "type": "TXT",
            "value": "v=spf1 ip4:127.0.0.1 ip4:192.0.2.0/24 -all",
            "zone_line": f'{DOMAIN}. 3600 IN TXT "v=spf1 ip4:127.0.0.1 ip4:192.0.2.0/24 -all"',
        }
    ]
    assert checks["spf"]["found"] == ["v=spf1 ip4:192.0.2.0/24 -all"]
    selector = dkim_record(cast.domain).selector
    assert checks["dkim"]["publish"][0]["zone_line"].startswith(
        f'{selector}._domainkey.{DOMAIN}. 3600 IN TXT "v=DKIM1; k=ed25519; p='
    )
    assert checks["srv-imaps"]["publish"][0]["zone_line"] == f"_imaps._tcp.{DOMAIN}. 3600 IN SRV 0 1 993 {HOSTNAME}."
    assert body["ok"] is False and body["problems"] == 7


def test_a_rotated_key_not_yet_published_is_pending(cast, zone):
    zone.lines = good_zone(cast.domain)
    services.rotate_dkim_key(cast.domain, actor="test")

    body = client_for(cast.alice).get(f"/api/v1/domains/{cast.domain.pk}/dns-check/").json()

    checks = {check["key"]: check for check in body["checks"]}
    assert checks["dkim"]["status"] == "pending"
    assert checks["dkim"]["explanation"].startswith("Pending — publish this record")
    retired = [check for key, check in checks.items() if key.startswith("dkim-retired-")]
    assert len(retired) == 1 and "still published" in retired[0]["explanation"]


def test_a_dns_server_that_never_answers_gives_timeouts_within_the_time_box(cast):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        silent.bind(("127.0.0.1", 0))
        config = DeliverySettings.for_server(cast.server)
        config.dns_server = f"127.0.0.1:{silent.getsockname()[1]}"
        config.save()
        started = time.monotonic()

        response = client_for(cast.dora).get(f"/api/v1/domains/{cast.domain.pk}/dns-check/")

        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert response.status_code == 200
    assert elapsed < 5, elapsed
    checks = response.json()["checks"]
    assert {check["status"] for check in checks} == {"unknown"}
    assert [c["explanation"] for c in checks if not c["explanation"].startswith("could not ask DNS: timeout")] == []


def test_only_those_who_see_the_domain_may_check_it_others_get_404(cast, zone):
    zone.lines = good_zone(cast.domain)
    other_admin = make_user("erin")
    cast.other_domain.administrators.add(other_admin)
    url = f"/api/v1/domains/{cast.domain.pk}/dns-check/"

    assert client_for(other_admin).get(url).status_code == 404
    assert client_for(cast.dave).get(url).status_code == 404
    assert client_for().get(url).status_code in (401, 403)
    for user in (cast.alice, cast.oscar, cast.dora):
        assert client_for(user).get(url).status_code == 200


def test_a_domain_that_is_not_local_is_refused(cast, zone):
    remote = services.add_domain(cast.server, "remote.example.test", type="remote", actor="test")

    response = client_for(cast.alice).get(f"/api/v1/domains/{remote.pk}/dns-check/")

    assert response.status_code == 409 and "Only a local domain" in response.content.decode()


def console_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_console_page_lists_each_check_with_copyable_lines_and_is_linked_from_the_domain(cast, zone):
    zone.lines = [line for line in good_zone(cast.domain) if not line.startswith("_dmarc.")]
    dora = console_for(cast.dora)
    domain_page = dora.get(reverse("console:domain", args=[cast.domain.pk])).content.decode()
    assert f'href="{reverse("console:domain-dns", args=[cast.domain.pk])}"' in domain_page

    page = dora.get(reverse("console:domain-dns", args=[cast.domain.pk]))

    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-check="mx" data-status="ok"' in html
    assert 'data-check="dmarc" data-status="missing"' in html
    line = f"_dmarc.{DOMAIN}. 3600 IN TXT &quot;v=DMARC1; p=none; rua=mailto:postmaster@{DOMAIN}&quot;"
    assert f'id="dns-dmarc-1" value="{line}"' in html
    assert 'data-copy="dns-dmarc-1"' in html and 'data-copy="dns-all"' in html
    assert "1 record needs attention" in html


def test_the_console_page_is_404_for_a_domain_administrator_of_another_domain(cast, zone):
    other_admin = make_user("erin")
    cast.other_domain.administrators.add(other_admin)

    response = console_for(other_admin).get(reverse("console:domain-dns", args=[cast.domain.pk]))

    assert response.status_code == 404


def test_the_command_prints_the_table_and_fails_when_something_is_not_ok(cast, zone, capsys):
    zone.lines = good_zone(cast.domain)
    call_command("smtpsvc", "dns-check", DOMAIN)
    out = capsys.readouterr().out
    assert f"DNS records of {DOMAIN} (asked {zone.address}" in out
    assert "ok       MX" in out

    zone.lines = [line for line in zone.lines if not line.startswith("_mta-sts.")]
    with pytest.raises(CommandError) as failure:
        call_command("smtpsvc", "dns-check", DOMAIN)

    assert failure.value.returncode == 1
    out = capsys.readouterr().out
    assert "missing  MTA-STS" in out
    assert f'publish: _mta-sts.{DOMAIN}. 3600 IN TXT "v=STSv1; id=' in out


@pytest.mark.backend_independent
def test_a_port_where_no_dns_server_listens_fails_each_check_within_the_time_box():
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    setup = dns_readiness.DomainSetup(
        domain="example.test",
        hostname="mail.example.test",
        node="n",
        smtp=dns_readiness.Listener("127.0.0.1", 25),
        node_addresses=None,
    )
    started = time.monotonic()

    checks = asyncio.run(dns_readiness.run_checks(setup, make_resolver(f"127.0.0.1:{port}", timeout_s=3), timeout_s=1))

    assert time.monotonic() - started < 2
    asked = [check for check in checks if check.key != "dkim"]  # no key: nothing to ask
    assert [
        check.explanation for check in asked if not check.explanation.startswith("could not ask DNS: timeout")
    ] == []


def test_a_dns_server_setting_that_is_no_address_makes_every_check_say_so_instead_of_failing(cast, settings):
    DeliverySettings.objects.filter(server=cast.server).update(dns_server="")
    settings.DELIVERY_DNS_SERVER = "dns.example.test"  # a name: it would need a resolver to resolve the resolver

    response = client_for(cast.dora).get(f"/api/v1/domains/{cast.domain.pk}/dns-check/")

    assert response.status_code == 200
    checks = response.json()["checks"]
    assert {check["status"] for check in checks} == {"unknown"}
    assert all(check["explanation"].startswith("could not ask DNS: ") for check in checks)
