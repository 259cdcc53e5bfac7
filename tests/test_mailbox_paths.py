"""Names that become folders stay inside them: `bob/new` can neither be made nor harm bob's mail."""

from __future__ import annotations

import os
import poplib
import smtplib

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from servers import maildir, mailstore, pop3_replies, services
from servers.models import Mailbox, ObservedState
from servers.snapshot import load_snapshot
from servers.storage import UnsafePathError, contained_path
from tests.api_factories import GOOD_PASSWORD
from tests.factories import PASSWORD, make_mailbox, make_pop3_service, make_server
from tests.helpers import free_port
from tests.panel_helpers import clear_login_throttle

pytestmark = pytest.mark.usefixtures("fast_hashing")

MESSAGE = b"Subject: unread\r\n\r\nfor bob\r\n"


def legacy_mailbox(server, local_part: str) -> Mailbox:
    """A mailbox whose name was stored before names were checked (as a direct database insert would)."""
    mailbox = make_mailbox(server, "legacy")
    Mailbox.objects.filter(pk=mailbox.pk).update(local_part=local_part)
    return Mailbox.objects.select_related("domain__server").get(pk=mailbox.pk)


def bob_with_unread_mail(server) -> tuple[Mailbox, str]:
    bob = make_mailbox(server, "bob")
    return bob, mailstore.deliver(bob.maildir, [MESSAGE])


# -- new names are refused, with the field at fault -----------------------------------------------


@pytest.mark.parametrize("local_part", ["bob/new", "bob/.Sent", "a/b/c", "bob/"])
def test_the_api_refuses_a_mailbox_name_with_a_path_separator_on_its_field(admin, local_part):
    domain = make_server(domain="paths.test").default_domain
    response = admin.post(
        "/api/v1/mailboxes/",
        {"domain": domain.pk, "local_part": local_part, "password": GOOD_PASSWORD},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["local_part"]
    # Refused by the published pattern (no "/" in a dot-atom) before the service's own check.
    assert any(words in response.json()["local_part"][0] for words in ("folder on disk", "Enter a mailbox name"))
    assert not Mailbox.objects.filter(domain=domain).exclude(local_part="postmaster").exists()


def test_the_console_form_refuses_a_mailbox_name_with_a_slash_next_to_the_field(people):
    domain = make_server(domain="console-paths.test").default_domain
    client = Client()
    client.force_login(people.alice)
    url = reverse("console:mailbox-new", args=[domain.pk])
    response = client.post(url, {"local_part": "bob/new", "password": PASSWORD})
    assert response.status_code == 200
    assert b'data-field="local_part"' in response.content and b"folder on disk" in response.content
    assert not Mailbox.objects.filter(local_part="bob/new").exists()


def test_a_console_import_dry_run_flags_a_mailbox_name_with_a_slash(people):
    from django.core.files.uploadedfile import SimpleUploadedFile

    domain = make_server(domain="import-paths.test").default_domain
    client = Client()
    client.force_login(people.alice)
    csv_file = SimpleUploadedFile("boxes.csv", b"local_part,password\nbob/new,Good-Pass-1\n", content_type="text/csv")
    response = client.post(reverse("console:domain-import", args=[domain.pk]), {"csv_file": csv_file, "dry_run": "on"})
    assert "1 with errors" in response.content.decode() and "folder on disk" in response.content.decode()


def test_a_group_address_with_a_slash_is_refused_too(db):
    server = make_server(domain="groups-paths.test")
    with pytest.raises(services.RefusedError) as refused:
        services.add_group(server.default_domain, "team/new")
    assert refused.value.field == "local_part"


@pytest.mark.parametrize("name", ["a/b.test", "..", "a..b.test", "x\\y.test", ".hidden.test", "nul\x00.test"])
def test_the_api_refuses_a_domain_name_that_could_leave_its_folder(admin, name):
    server = make_server(domain="domains-paths.test")
    response = admin.post("/api/v1/domains/", {"server": server.pk, "name": name, "type": "local"}, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["name"]


@pytest.mark.parametrize(
    "home", ["homes/../escaped", "{var}/homes/x/../../escaped", "homes/with\x01control", "homes/nul\x00byte"]
)
def test_the_api_refuses_a_server_home_directory_with_dot_dot_or_control_characters(admin, home):
    home = home.format(var=settings.VAR_DIR)
    body = {
        "name": "Paths server",
        "default_domain": "home-paths.test",
        "ip_address": "127.0.0.1",
        "port": free_port(),
        "home_dir": home,
        "start": False,
    }
    response = admin.post("/api/v1/servers/", body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == ["home_dir"]
    assert not (settings.VAR_DIR / "escaped").exists()


# -- mailboxes named before the check ---------------------------------------------------------------


def test_deleting_a_legacy_mailbox_inside_bobs_folder_with_its_mail_keeps_bobs_unread_mail(
    admin, django_capture_on_commit_callbacks
):
    server = make_server(domain="legacy.test")
    bob, unread = bob_with_unread_mail(server)
    legacy = legacy_mailbox(server, "bob/new")

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.delete(f"/api/v1/mailboxes/{legacy.pk}/?remove_mail=1")

    assert response.status_code == 204
    assert not Mailbox.objects.filter(pk=legacy.pk).exists()
    assert [m.uid for m in maildir.list_messages(bob.maildir)] == [unread]
    assert (bob.maildir / "new" / unread).read_bytes() == MESSAGE


def test_the_console_says_a_legacy_mailboxs_mail_was_left_on_disk(people, django_capture_on_commit_callbacks):
    server = make_server(domain="legacy-console.test")
    bob, unread = bob_with_unread_mail(server)
    legacy = legacy_mailbox(server, "bob/new")
    console = Client()
    console.force_login(people.alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = console.post(
            reverse("console:mailbox", args=[legacy.pk]), {"form": "delete", "remove_mail": "1"}, follow=True
        )
    assert b"left on disk" in response.content and b"its stored mail was removed" not in response.content
    assert (bob.maildir / "new" / unread).read_bytes() == MESSAGE


def test_deleting_a_mailbox_whose_folder_is_a_link_leaves_the_target_alone(admin, django_capture_on_commit_callbacks):
    server = make_server(domain="linked.test")
    bob, unread = bob_with_unread_mail(server)
    carol = make_mailbox(server, "carol")
    os.rename(carol.maildir, carol.maildir.with_name("carol.old"))
    os.symlink(bob.maildir, carol.maildir)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin.delete(f"/api/v1/mailboxes/{carol.pk}/?remove_mail=1")

    assert response.status_code == 204
    assert [m.uid for m in maildir.list_messages(bob.maildir)] == [unread]


def test_deleting_an_ordinary_mailbox_with_its_mail_still_removes_its_folder(admin, django_capture_on_commit_callbacks):
    server = make_server(domain="ordinary.test")
    ann = make_mailbox(server, "ann")
    mailstore.deliver(ann.maildir, [MESSAGE])
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.delete(f"/api/v1/mailboxes/{ann.pk}/?remove_mail=1").status_code == 204
    assert not ann.maildir.exists()


def test_a_legacy_mailbox_cannot_sign_in_to_webmail(db):
    server = make_server(domain="signin.test")
    make_mailbox(server, "bob")
    legacy_mailbox(server, "bob/new")
    clear_login_throttle()
    response = Client().post(reverse("webmail:sign_in"), {"address": "bob/new@signin.test", "password": PASSWORD})
    assert response.status_code == 403
    with pytest.raises(services.LoginRefusedError):
        services.authenticate_mailbox("bob/new@signin.test", PASSWORD)


def test_winpop_refuses_to_write_a_quota_file_for_a_legacy_mailbox_with_a_message_not_a_traceback(db):
    from django.core.management import CommandError, call_command

    server = make_server(domain="quota-file.test")
    bob = make_mailbox(server, "bob")
    legacy_mailbox(server, "bob/new")
    with pytest.raises(CommandError, match="not written to"):
        call_command("winpop", "createquotafile", "bob/new@quota-file.test")
    assert not (bob.maildir / "new" / "maildirsize").exists()


def test_a_legacy_mailbox_is_kept_out_of_the_routing_snapshot(db):
    server = make_server(domain="routes.test")
    make_mailbox(server, "bob")
    legacy_mailbox(server, "bob/new")
    snapshot = load_snapshot(server.pk)
    assert snapshot.destination("bob/new", "routes.test") is None
    assert snapshot.destination("bob", "routes.test") is not None


@pytest.mark.usefixtures("supervised")
def test_smtp_and_pop3_keep_a_legacy_mailbox_inside_bobs_folder_away_from_bobs_mail():
    from tests.helpers import worker_running
    from tests.test_pop3_service import wait_for_state

    server = make_server(domain="smtp-paths.test", start=True)
    bob, unread = bob_with_unread_mail(server)
    legacy_mailbox(server, "bob/new")
    services.update_virtual_server(server, max_hop_count=31)  # any change: the worker reloads its routes
    worker_running(server)
    pop3 = wait_for_state(make_pop3_service(), ObservedState.RUNNING)

    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("sender@outside.test")[0] == 250
        code, text = client.rcpt("bob/new@smtp-paths.test")
        assert code == 550 and text.startswith(b"5.1.1"), (code, text)
        assert client.rcpt("bob@smtp-paths.test")[0] == 250
        assert client.data(b"Subject: hi\r\n\r\nhello\r\n")[0] == 250

    legacy = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
    legacy.user("bob/new@smtp-paths.test")
    with pytest.raises(poplib.error_proto) as refused:
        legacy.pass_(PASSWORD)
    assert refused.value.args[0].decode() == pop3_replies.MAILBOX_LOCKED
    legacy.close()
    client = poplib.POP3("127.0.0.1", pop3.port, timeout=10)
    client.user("bob@smtp-paths.test")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    assert client.stat()[0] == 2
    client.quit()
    assert not (bob.maildir / "new" / "new").exists() and not (bob.maildir / "new" / "tmp").exists()
    assert unread in {m.uid for m in maildir.list_messages(bob.maildir)}


# -- the one helper every Maildir write and delete goes through -------------------------------------


def test_contained_path_refuses_every_way_out_of_its_parent(tmp_path):
    (tmp_path / "home").mkdir()
    home = tmp_path / "home"
    assert contained_path(home, "Mailbox", "d.test", "ann") == home / "Mailbox" / "d.test" / "ann"
    for parts in [("..",), (".",), ("a/b",), ("a\\b",), ("",), ("a\x00",), ("a\nb",)]:
        with pytest.raises(UnsafePathError):
            contained_path(home, *parts)
    (home / "Mailbox").symlink_to(tmp_path)
    with pytest.raises(UnsafePathError):
        contained_path(home, "Mailbox", "d.test", "ann")


def test_maildir_writes_refuse_a_folder_inside_another_maildirs_new(tmp_path):
    bob = maildir.ensure_maildir(tmp_path / "d.test" / "bob")
    for inner in (bob / "new", bob / "cur" / "x", bob / "tmp"):
        with pytest.raises(UnsafePathError):
            mailstore.deliver(inner, [MESSAGE])
        with pytest.raises(UnsafePathError):
            maildir.ensure_maildir(inner)
        with pytest.raises(UnsafePathError):
            mailstore.delete_messages(inner, ["x"])
    with pytest.raises(UnsafePathError):
        maildir.mailbox_maildir(tmp_path, "d.test", ".hidden")
    folder = maildir.ensure_maildir(maildir.folder_maildir(bob, "Sent"))
    assert mailstore.deliver(folder, [MESSAGE]) and folder == bob / ".Sent"
    with pytest.raises(UnsafePathError):
        maildir.folder_maildir(bob, "../../etc")
