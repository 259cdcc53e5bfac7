"""The node's IMAP service as configuration: created, changed, started and stopped through the services
and `manage.py imapsvc`, with field-named refusals (no worker process here)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from servers import services
from servers.models import AuditEntry, ImapService, Node, ServiceState
from servers.services import RefusedError
from tests import factories
from tests.factories import make_pop3_service
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


def make_imap_service(**kwargs) -> ImapService:
    """Stopped, and without IMAPS unless asked: no worker runs in these tests."""
    kwargs.setdefault("tls_port", None)
    kwargs.setdefault("start", False)
    return factories.make_imap_service(**kwargs)


def imapsvc(*args: str) -> str:
    out = StringIO()
    call_command("imapsvc", *args, stdout=out)
    return out.getvalue()


def test_a_new_imap_service_gets_its_own_certificate_and_runs_the_imap_worker():
    service = make_imap_service()

    assert service.cert_path.exists() and service.key_path.exists()
    assert service.cert_path.name == f"imap-{service.pk}.crt"
    assert service.worker_argv() == ["run_imapd", "--service", str(service.pk)]
    assert service.process_kind == "imap"
    assert AuditEntry.objects.filter(action="create_imap_service", object_id=str(service.pk)).exists()


def test_off_loopback_the_imap_service_takes_passwords_only_after_starttls():
    assert make_imap_service(ip_address="192.0.2.10").plaintext_requires_tls
    other_node = Node.objects.create(name="other-node")
    assert make_imap_service(ip_address="127.0.0.1", node=other_node).plaintext_passwords_allowed


def test_a_node_has_one_imap_service():
    make_imap_service()
    with pytest.raises(RefusedError) as refused:
        make_imap_service()
    assert refused.value.field == "node"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"port": 0}, "port"),
        ({"port": "many"}, "port"),
        ({"tls_port": 70000}, "tls_port"),
        ({"ip_address": "not-an-ip"}, "ip_address"),
        ({"default_domain": "bad..domain"}, "default_domain"),
        ({"home_dir": "/tmp"}, "home_dir"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(changes, field):
    service = make_imap_service()
    with pytest.raises(RefusedError) as refused:
        services.update_imap_service(service, **changes)
    assert refused.value.field == field
    service.refresh_from_db()
    assert service.config_version == 1


def test_the_imaps_port_must_differ_from_the_imap_port():
    service = make_imap_service()
    with pytest.raises(RefusedError) as refused:
        services.update_imap_service(service, tls_port=service.port)
    assert refused.value.field == "tls_port" and "IMAPS" in refused.value.message


def test_a_change_bumps_the_configuration_version_and_is_audited():
    service = make_imap_service()
    tls_port = free_port()

    service = services.update_imap_service(
        service, tls_port=tls_port, default_domain="Study003.Local", plaintext_requires_tls=True, actor="alice"
    )

    assert (service.tls_port, service.default_domain, service.plaintext_requires_tls) == (
        tls_port,
        "study003.local",
        True,
    )
    assert service.config_version == 2
    entry = AuditEntry.objects.get(action="update_imap_service")
    assert entry.actor == "alice" and entry.after["tls_port"] == tls_port


def test_the_imap_service_cannot_take_a_port_the_pop3_service_uses():
    pop3 = make_pop3_service()
    with pytest.raises(RefusedError) as refused:
        make_imap_service(port=pop3.port, start=True)
    assert refused.value.field == "port" and "POP3 service" in refused.value.message


def test_start_pause_and_stop_are_desired_states_with_their_own_audit_actions():
    service = make_imap_service()

    for desired, action in (
        (ServiceState.RUNNING, "start_imap_service"),
        (ServiceState.PAUSED, "pause_imap_service"),
        (ServiceState.STOPPED, "stop_imap_service"),
    ):
        service = services.set_imap_state(service, desired, actor="alice")
        assert service.desired_state == desired
        assert AuditEntry.objects.filter(action=action, actor="alice").count() == 1


def test_the_supervisor_knows_the_imap_service():
    from servers.supervision import SUPERVISED_MODELS

    assert ImapService in SUPERVISED_MODELS


# -- manage.py imapsvc -----------------------------------------------------------------------------


def test_imapsvc_status_shows_the_address_tls_and_state():
    service = make_imap_service(tls_port=free_port())

    shown = imapsvc("status")

    assert f"IMAP service of node {service.node.name}: 127.0.0.1:{service.port}, IMAPS on {service.tls_port}" in shown
    assert "desired stopped, state stopped" in shown
    assert "plaintext login before STARTTLS: allowed" in shown


def test_imapsvc_set_changes_settings_and_refuses_bad_ones_by_field():
    service = make_imap_service()
    new_port = free_port()

    shown = imapsvc("set", "--port", str(new_port), "--require-tls", "yes", "--default-domain", "lab.test")

    service.refresh_from_db()
    assert (service.port, service.plaintext_requires_tls, service.default_domain) == (new_port, True, "lab.test")
    assert "plaintext login before STARTTLS: refused" in shown
    with pytest.raises(CommandError, match=r"^port: The TCP port must be between 1 and 65535\.$"):
        imapsvc("set", "--port", "70000")
    with pytest.raises(CommandError, match=r"^tls-port: The IMAPS port must differ"):
        imapsvc("set", "--tls-port", str(new_port))
    with pytest.raises(CommandError, match="Nothing to change"):
        imapsvc("set")


def test_imapsvc_tls_port_zero_turns_imaps_off():
    service = make_imap_service(tls_port=free_port())
    imapsvc("set", "--tls-port", "0")
    service.refresh_from_db()
    assert service.tls_port is None


def test_imapsvc_start_pause_stop_record_the_desired_state():
    service = make_imap_service()
    for verb, desired in (("start", "running"), ("pause", "paused"), ("stop", "stopped")):
        assert f"{desired} requested" in imapsvc(verb)
        service.refresh_from_db()
        assert service.desired_state == desired


def test_imapsvc_without_a_service_says_how_to_create_one():
    with pytest.raises(CommandError, match="imapsvc create"):
        imapsvc("status")
    port = free_port()
    assert f"127.0.0.1:{port}" in imapsvc("create", "--ip", "127.0.0.1", "--port", str(port))
    assert ImapService.objects.get().port == port
