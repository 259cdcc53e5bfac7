"""The Submission server: made at the first start (and the next start of older installations), owning
no domain, delivering to every local mailbox of its node, and offered first to mail programs."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from servers import first_run, services
from servers.models import Domain, VirtualServer
from servers.services.client_settings import SMTP, settings_for_address
from servers.snapshot import load_snapshot
from tests.factories import make_mailbox, make_server, make_user
from tests.helpers import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture
def older_installation(fast_hashing, settings, tmp_path):
    """An installation made before the submission server existed: an administrator and one server."""
    settings.DEFAULT_SUBMISSION_PORT = free_port()
    make_user("root", superuser=True)
    server = make_server(domain="older.test", start=True)
    return server


def test_the_next_start_of_an_older_installation_adds_the_submission_server_once(older_installation, settings):
    first = first_run.set_up()
    second = first_run.set_up()
    assert any(line.startswith("Submission server:") for line in first.created)
    assert not any(line.startswith("Submission server:") for line in second.created)
    submission = VirtualServer.objects.get(is_submission=True)
    assert submission.port == settings.DEFAULT_SUBMISSION_PORT
    assert submission.ip_address == settings.DEFAULT_SMTP_HOST
    assert submission.allow_anonymous is False
    # It takes no domain, so no domain's mailboxes move to it.
    assert not submission.domains.exists()
    assert services.find_local_domain("older.test").server == older_installation


def test_the_submission_server_delivers_to_mailboxes_of_every_server_of_its_node(older_installation):
    other = make_server(domain="other.test")
    helena = make_mailbox(older_installation, "helena")
    bob = make_mailbox(other, "bob")
    first_run.set_up()
    snapshot = load_snapshot(VirtualServer.objects.get(is_submission=True).pk)
    assert snapshot.policy.allow_anonymous is False
    assert snapshot.accepts_domain("older.test") and snapshot.accepts_domain("other.test")
    assert snapshot.destination("helena", "older.test").mailboxes[0].maildir == helena.maildir
    assert snapshot.destination("bob", "other.test").mailboxes[0].maildir == bob.maildir
    assert snapshot.destination("nobody", "elsewhere.test") is None
    assert snapshot.default_domain == "older.test"


def test_a_new_mailbox_on_another_server_reaches_the_running_submission_server(older_installation):
    first_run.set_up()
    submission = VirtualServer.objects.get(is_submission=True)
    before = submission.config_version
    make_mailbox(older_installation, "carol")
    submission.refresh_from_db()
    assert submission.config_version > before
    assert "carol@older.test" in load_snapshot(submission.pk).mailboxes


def test_mail_programs_are_offered_the_submission_server_first(older_installation, settings):
    first_run.set_up()
    outgoing = [s for s in settings_for_address("anyone@older.test") or [] if s.protocol == SMTP]
    assert [s.port for s in outgoing] == [settings.DEFAULT_SUBMISSION_PORT, older_installation.port]


def test_the_console_shows_the_submission_server(older_installation):
    first_run.set_up()
    submission = VirtualServer.objects.get(is_submission=True)
    client = Client()
    client.force_login(make_user("console-admin", superuser=True))
    assert client.get(reverse("console:servers")).status_code == 200
    assert client.get(reverse("console:server", args=[submission.pk])).status_code == 200
    assert Domain.objects.filter(server=submission).count() == 0


def test_the_wizard_creates_a_submission_server_without_a_domain(fast_hashing, settings):
    client = Client()
    client.force_login(make_user("wizard-admin", superuser=True))
    port = free_port()

    def step(number: int, **fields):
        data = {"step": number, **{f"step{number}-{k}": v for k, v in fields.items()}}
        return client.post(reverse("console:server-new"), data)

    step(0, name="Mail programs", kind="submission")
    step(1, ip_address="127.0.0.1", port=port)
    step(2, home_dir=str(settings.VAR_DIR / "homes" / "wizard-submission"))
    response = step(3, default_domain="")
    server = VirtualServer.objects.get(name="Mail programs")
    assert response["Location"] == reverse("console:server", args=[server.pk])
    assert server.is_submission and not server.allow_anonymous and server.port == port
    assert not server.domains.exists()


def test_the_wizard_still_needs_a_domain_for_a_mail_server(fast_hashing, settings):
    client = Client()
    client.force_login(make_user("wizard-admin", superuser=True))
    for number, fields in enumerate(
        [
            {"name": "Needs a domain"},
            {"ip_address": "127.0.0.1", "port": free_port()},
            {"home_dir": str(settings.VAR_DIR / "homes" / "wizard-needs-domain")},
            {"default_domain": ""},
        ]
    ):
        response = client.post(
            reverse("console:server-new"), {"step": number, **{f"step{number}-{k}": v for k, v in fields.items()}}
        )
    assert response.status_code == 200
    assert not VirtualServer.objects.filter(name="Needs a domain").exists()


def test_a_submission_server_off_loopback_takes_passwords_only_after_starttls(fast_hashing, settings):
    server = services.create_submission_server(
        name="Public submission",
        ip_address="0.0.0.0",
        port=free_port(),
        home_dir=settings.VAR_DIR / "homes" / "public-submission",
        start=False,
    )
    snapshot = load_snapshot(server.pk)
    assert snapshot.policy.auth_requires_tls and not snapshot.policy.allow_anonymous


def test_a_submission_server_takes_no_domain_of_its_own(older_installation):
    first_run.set_up()
    submission = VirtualServer.objects.get(is_submission=True)
    with pytest.raises(services.RefusedError, match="holds no domains"):
        services.add_domain(submission, "extra.test")
