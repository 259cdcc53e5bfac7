"""Smart-host passwords are encrypted at rest, never shown back, and decrypted only to authenticate."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.management import call_command
from django.db import connection

from servers import mailstore, services, stored_secrets
from servers.delivery import services as delivery_services
from servers.delivery.models import DeliverySettings, RecipientState, RemoteDomainRoute
from servers.models import DomainType, VirtualServer
from tests.delivery_helpers import run_queue, send
from tests.factories import make_server
from tests.helpers import wait_until

PASSWORD = "Relay-s3cret-pw"
REPO_DIR = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("fast_hashing")
MIGRATION = importlib.import_module("servers.migrations.0009_secrets_and_quota_ceiling")


def stored_row(table: str, column: str, pk: int) -> str:
    """The column exactly as the database holds it, past the ORM."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608 - fixed names
        return cursor.fetchone()[0]


def test_the_database_row_holds_no_plaintext_and_the_api_never_returns_it(server, admin):
    url = f"/api/v1/servers/{server.pk}/delivery/"
    response = admin.patch(
        url,
        {"smart_host": "relay.test", "smart_host_username": "relay-user", "smart_host_password": PASSWORD},
        format="json",
    )
    assert response.status_code == 200, response.content
    config = DeliverySettings.objects.get(server=server)
    raw = stored_row(DeliverySettings._meta.db_table, "smart_host_password", config.pk)
    assert PASSWORD not in raw and raw.startswith("fernet:")
    shown = admin.get(url)
    assert PASSWORD not in shown.content.decode() and raw not in shown.content.decode()
    assert shown.json()["smart_host_password_set"] is True and "smart_host_password" not in shown.json()


def test_delivery_authenticates_to_a_loopback_smart_host_with_the_decrypted_password(server, dns, remotes, port, admin):
    relay = remotes("127.0.0.7", users={"relay-user": PASSWORD})
    response = admin.patch(
        f"/api/v1/servers/{server.pk}/delivery/",
        {
            "smart_host": "[127.0.0.7]",
            "smart_host_port": port,
            "smart_host_username": "relay-user",
            "smart_host_password": PASSWORD,
        },
        format="json",
    )
    assert response.status_code == 200, response.content
    send(server, ["bob@far.test"])
    run_queue(server)
    [received] = relay.received
    assert received.auth_user == "relay-user" and received.rcpt_tos == ["bob@far.test"]


def test_a_password_the_key_cannot_decrypt_keeps_the_mail_queued_with_a_clear_reply(
    server, dns, remotes, port, settings
):
    remotes("127.0.0.7", users={"relay-user": PASSWORD})
    delivery_services.update_delivery_settings(
        server,
        smart_host="[127.0.0.7]",
        smart_host_port=port,
        smart_host_username="relay-user",
        smart_host_password=PASSWORD,
    )
    settings.SECRETS_KEYS = [Fernet.generate_key().decode()]  # the key was lost
    row = send(server, ["bob@far.test"])
    run_queue(server)
    recipient = row.recipients.get()
    assert recipient.state == RecipientState.PENDING and recipient.status == "4.7.0"
    assert "cannot be decrypted" in recipient.last_reply and PASSWORD not in recipient.last_reply


def test_an_old_key_still_decrypts_after_a_new_one_is_put_first(settings):
    old = settings.SECRETS_KEYS[0]
    stored = stored_secrets.conceal(PASSWORD)
    settings.SECRETS_KEYS = [Fernet.generate_key().decode(), old]
    assert stored_secrets.reveal(stored) == PASSWORD
    assert stored_secrets.reveal(stored_secrets.conceal(PASSWORD)) == PASSWORD


def test_the_migration_encrypts_passwords_stored_in_plain_text(server):
    partner = services.add_domain(server, "partner.test", type=DomainType.REMOTE)
    config = DeliverySettings.for_server(server)
    DeliverySettings.objects.filter(pk=config.pk).update(
        smart_host="relay.test", smart_host_username="u", smart_host_password=PASSWORD
    )
    route = RemoteDomainRoute.objects.create(
        domain=partner, smart_host="relay.test", username="u", password="Route-pw-1"
    )
    MIGRATION.encrypt_passwords(apps, None)
    MIGRATION.encrypt_passwords(apps, None)  # a second run changes nothing
    raw = stored_row(DeliverySettings._meta.db_table, "smart_host_password", config.pk)
    assert PASSWORD not in raw and stored_secrets.reveal(raw) == PASSWORD
    raw_route = stored_row(RemoteDomainRoute._meta.db_table, "password", route.pk)
    assert "Route-pw-1" not in raw_route and stored_secrets.reveal(raw_route) == "Route-pw-1"


def test_the_cli_masks_the_password_and_a_route_keeps_it_unless_given(server):
    VirtualServer.objects.filter(pk=server.pk).update(node=services.local_node())
    services.add_domain(server, "partner.test", type=DomainType.REMOTE)
    out = StringIO()
    call_command(
        "smtpqueue",
        "delivery",
        str(server.pk),
        "smart_host=relay.test",
        "smart_host_username=u",
        f"smart_host_password={PASSWORD}",
        stdout=out,
    )
    assert "smart_host_password=********" in out.getvalue() and PASSWORD not in out.getvalue()
    call_command(
        "smtpqueue",
        "route",
        str(server.pk),
        "partner.test",
        "mx.partner.test",
        "--user",
        "u",
        "--password",
        "Route-pw-1",
        stdout=StringIO(),
    )
    call_command(
        "smtpqueue",
        "route",
        str(server.pk),
        "partner.test",
        "mx.partner.test",
        "--port",
        "587",
        "--user",
        "u",
        stdout=StringIO(),
    )
    route = RemoteDomainRoute.objects.get(domain__name="partner.test")
    assert route.port == 587 and stored_secrets.reveal(route.password) == "Route-pw-1"
    assert "Route-pw-1" not in stored_row(RemoteDomainRoute._meta.db_table, "password", route.pk)


def test_clearing_the_user_name_forgets_the_password(server):
    delivery_services.update_delivery_settings(
        server, smart_host="relay.test", smart_host_username="u", smart_host_password=PASSWORD
    )
    config = delivery_services.update_delivery_settings(server, smart_host_username="")
    assert config.smart_host_password == ""


def test_without_a_configured_key_one_is_generated_next_to_the_data(settings):
    key_file = settings.VAR_DIR / "secrets_key"
    assert [key_file.read_text().strip()] == settings.SECRETS_KEYS
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_a_malformed_secrets_key_stops_the_start_naming_the_variable(tmp_path):
    env = {**os.environ, "MAILCONSOLE_VAR_DIR": str(tmp_path), "MAILCONSOLE_SECRETS_KEY": "not-a-fernet-key"}
    done = subprocess.run(
        [sys.executable, "-c", "import mailconsole.settings"],
        cwd=REPO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "MAILCONSOLE_SECRETS_KEY must be Fernet keys" in done.stderr


def test_the_celery_worker_process_authenticates_to_the_smart_host_with_the_stored_password(
    supervised, dns, port, remotes
):
    server = make_server(domain="lab.test", start=True)
    DeliverySettings.objects.filter(pk=DeliverySettings.for_server(server).pk).update(
        dns_server=dns.address, outbound_timeout_s=30
    )
    delivery_services.update_delivery_settings(
        server,
        smart_host="[127.0.0.7]",
        smart_host_port=port,
        smart_host_username="relay-user",
        smart_host_password=PASSWORD,
    )
    relay = remotes("127.0.0.7", users={"relay-user": PASSWORD})
    mailstore.enqueue(server.home_dir, "alice@lab.test", ["bob@far.test"], [b"Subject: via the relay\r\n\r\nhello\r\n"])
    wait_until(lambda: relay.recipients() == ["bob@far.test"], timeout_s=30, message="delivery through the relay")
    assert relay.received[0].auth_user == "relay-user"
