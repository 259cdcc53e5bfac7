"""The console through Django's test client: sign-in, scoping by role, CSRF and each page's verbs."""

from __future__ import annotations

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from servers import services, stored_secrets
from servers.models import AuditEntry, Domain, GroupAddress, Mailbox, VirtualServer
from tests.helpers import free_port
from tests.panel_helpers import PASSWORD, clear_login_throttle, make_cast

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(fast_hashing):
    clear_login_throttle()
    return make_cast()


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_login(client: Client, username: str, password: str, **extra):
    return client.post(reverse("console:login"), {"username": username, "password": password}, **extra)


# -- sign in / sign out -------------------------------------------------------------------------------


def test_root_redirects_to_the_console(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/console/"


def test_console_sends_a_stranger_to_the_sign_in_page(client):
    response = client.get("/console/servers/")
    assert response.status_code == 302
    assert response["Location"].startswith("/console/login/?next=/console/servers/")


def test_right_password_signs_in_and_goes_to_next(client, cast):
    response = client.post(
        reverse("console:login") + "?next=/console/servers/",
        {"username": "alice", "password": PASSWORD, "next": "/console/servers/"},
    )
    assert response.status_code == 302 and response["Location"] == "/console/servers/"
    assert client.get("/console/").status_code == 200


def test_sign_in_refuses_to_redirect_off_site(client, cast):
    response = client.post(
        reverse("console:login"), {"username": "alice", "password": PASSWORD, "next": "https://evil.example/"}
    )
    assert response["Location"] == "/console/"


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(client, cast):
    response = post_login(client, "alice", "nope")
    assert response.status_code == 401
    assert b"user name or password is incorrect" in response.content
    assert post_login(client, "nobody", "nope").content.count(b"user name or password is incorrect") == 1


@override_settings(CONSOLE_LOGIN_FAILURES_PER_USERNAME=3)
def test_username_is_locked_out_after_repeated_failures_even_with_the_right_password(client, cast):
    for _ in range(3):
        post_login(client, "alice", "wrong")
    response = post_login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert b"Too many failed sign-ins" in response.content
    # Another user from another address is not affected.
    assert post_login(Client(REMOTE_ADDR="10.9.9.9"), cast.oscar.username, PASSWORD).status_code == 302


@override_settings(CONSOLE_LOGIN_FAILURES_PER_ADDRESS=4, CONSOLE_LOGIN_FAILURES_PER_USERNAME=100)
def test_client_address_is_locked_out_after_failures_across_usernames(cast):
    attacker = Client(REMOTE_ADDR="192.0.2.7")
    for name in ("u1", "u2", "u3", "u4"):
        post_login(attacker, name, "wrong")
    assert post_login(attacker, cast.oscar.username, PASSWORD).status_code == 429
    assert post_login(Client(REMOTE_ADDR="192.0.2.8"), cast.oscar.username, PASSWORD).status_code == 302


def test_sign_out_needs_a_post_and_ends_the_session(cast):
    client = client_for(cast.alice)
    assert client.get(reverse("console:logout")).status_code == 405
    assert client.post(reverse("console:logout")).status_code == 302
    assert client.get("/console/").status_code == 302


def test_forms_are_refused_without_a_csrf_token(cast):
    client = Client(enforce_csrf_checks=True)
    client.force_login(cast.alice)
    response = client.post(reverse("console:server-state", args=[cast.server.pk]), {"action": "start"})
    assert response.status_code == 403
    assert VirtualServer.objects.get(pk=cast.server.pk).desired_state == "stopped"
    page = client.get(reverse("console:server", args=[cast.server.pk]))
    assert b'name="csrfmiddlewaretoken"' in page.content


# -- scoping by role ----------------------------------------------------------------------------------


def test_operator_sees_only_the_servers_they_operate(cast):
    client = client_for(cast.oscar)
    listing = client.get(reverse("console:servers")).content.decode()
    assert "Lab server" in listing and "Other server" not in listing
    assert client.get(reverse("console:server", args=[cast.other_server.pk])).status_code == 404
    assert (
        client.post(reverse("console:server-state", args=[cast.other_server.pk]), {"action": "start"}).status_code
        == 404
    )


def test_domain_administrator_cannot_see_another_domain(cast):
    client = client_for(cast.dora)
    assert client.get(reverse("console:domain", args=[cast.domain.pk])).status_code == 200
    assert client.get(reverse("console:domain", args=[cast.other_domain.pk])).status_code == 404
    assert client.get(reverse("console:server", args=[cast.server.pk])).status_code == 404
    assert client.get(reverse("console:server-domains", args=[cast.server.pk])).status_code == 404
    tree = client.get(reverse("console:pop3")).content.decode()
    assert "dora.example.test" in tree and "lab.example.test" not in tree


def test_domain_administrator_cannot_remove_their_own_domain_from_the_server(cast):
    client = client_for(cast.dora)
    response = client.post(reverse("console:domain-action", args=[cast.domain.pk]), {"action": "remove"})
    assert response.status_code == 403  # she sees the domain; changing it is not hers (the API answers 403 too)
    assert Domain.objects.filter(pk=cast.domain.pk).exists()


def test_domain_administrator_cannot_reach_another_domains_mailbox(cast):
    other = services.add_mailbox(cast.other_domain, "secret", PASSWORD, actor="test")
    client = client_for(cast.dora)
    assert client.get(reverse("console:mailbox", args=[other.pk])).status_code == 404
    assert client.get(reverse("console:domain-export", args=[cast.other_domain.pk])).status_code == 404


def test_only_an_administrator_runs_the_wizard_and_reads_the_audit_log(cast):
    client = client_for(cast.oscar)
    assert client.get(reverse("console:server-new")).status_code == 403
    audit = client.get(reverse("console:audit"))  # an operator reads only the changes they made, as in the API
    assert audit.status_code == 200 and "create_virtual_server" not in audit.content.decode()
    assert client.get(reverse("console:services")).status_code == 403
    assert client.post(reverse("console:server-delete", args=[cast.server.pk])).status_code == 403


def test_security_tab_shows_operators_only_to_an_administrator(cast):
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=security"
    assert cast.oscar.username in client_for(cast.alice).get(url).content.decode()
    assert "Only an administrator" in client_for(cast.oscar).get(url).content.decode()


# -- servers ------------------------------------------------------------------------------------------


def tab_data(server: VirtualServer, tab: str, **changes) -> dict:
    """A property-sheet tab's form as the browser would post it: today's values, with `changes`."""
    from frontend.forms import server_tab_fields
    from servers.services.virtual_servers import EDITABLE_FIELDS

    server = VirtualServer.objects.get(pk=server.pk)
    data = {}
    for name in server_tab_fields(tab, VirtualServer, tuple(EDITABLE_FIELDS)):
        value = getattr(server, name)
        if value is True:
            data[name] = "on"
        elif value is not None and value is not False:
            data[name] = str(value)
    data.update(changes)
    return data


def wizard_post(client: Client, step: int, **fields):
    data = {"step": step, **{f"step{step}-{k}": v for k, v in fields.items()}}
    return client.post(reverse("console:server-new"), data)


def test_wizard_creates_a_server_in_four_steps(cast, settings):
    client = client_for(cast.alice)
    port = free_port()
    assert b"Name" in client.get(reverse("console:server-new")).content
    response = wizard_post(client, 0, name="Wizard server")
    assert b'data-testid="wizard-step-1"' in response.content
    response = wizard_post(client, 1, ip_address="127.0.0.1", port=port)
    assert b"cannot be changed after the server is created" in response.content
    assert b"wizard-server" in response.content  # the default home directory is proposed
    home = settings.VAR_DIR / "homes" / "wizard"
    response = wizard_post(client, 2, home_dir=str(home))
    assert b'data-testid="wizard-step-3"' in response.content
    response = wizard_post(client, 3, default_domain="Study003.Local")
    server = VirtualServer.objects.get(name="Wizard server")
    assert response["Location"] == reverse("console:server", args=[server.pk])
    assert (server.ip_address, server.port, server.home_dir) == ("127.0.0.1", port, str(home))
    assert server.default_domain.name == "study003.local" and server.desired_state == "stopped"
    assert (home / "Drop").is_dir()


def test_wizard_shows_a_refused_answer_next_to_its_field_on_its_step(cast):
    client = client_for(cast.alice)
    wizard_post(client, 0, name="Lab server")  # a name that is taken: only the service knows
    wizard_post(client, 1, ip_address="0.0.0.0", port=2600)
    wizard_post(client, 2, home_dir="/tmp/mailconsole-wizard-taken")
    response = wizard_post(client, 3, default_domain="x.example.test")
    html = response.content.decode()
    assert 'data-testid="wizard-step-0"' in html
    assert 'data-field="name"' in html and "already has a server named" in html
    assert not VirtualServer.objects.filter(home_dir="/tmp/mailconsole-wizard-taken").exists()


def test_wizard_checks_each_step_before_the_next(cast):
    client = client_for(cast.alice)
    wizard_post(client, 0, name="Port check")
    response = wizard_post(client, 1, ip_address="0.0.0.0", port=70000)
    assert b'data-testid="wizard-step-1"' in response.content
    assert b"field-error" in response.content


def test_general_tab_saves_and_says_what_changed(cast):
    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk])
    new_port = free_port()
    response = client.post(url + "?tab=general", tab_data(cast.server, "general", port=new_port), follow=True)
    assert f"TCP port: {cast.server.port} \u2192 {new_port}" in response.content.decode()
    assert VirtualServer.objects.get(pk=cast.server.pk).port == new_port
    response = client.post(url + "?tab=general", tab_data(cast.server, "general"), follow=True)
    assert "Nothing changed" in response.content.decode()


def test_messages_tab_saves_the_size_limit_and_refuses_nonsense_next_to_the_field(cast):
    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=messages"
    client.post(url, tab_data(cast.server, "messages", max_message_size_kb="4096"))
    assert VirtualServer.objects.get(pk=cast.server.pk).max_message_size_kb == 4096
    response = client.post(url, tab_data(cast.server, "messages", max_message_size_kb="0"))
    assert b'data-field="max_message_size_kb"' in response.content and b"field-error" in response.content


def test_access_tab_saves_a_flag_and_says_what_changed(cast):
    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=access"
    data = tab_data(cast.server, "access")
    data.pop("allow_anonymous", None)
    response = client.post(url, data, follow=True)
    assert "Anonymous access: on \u2192 off" in response.content.decode()
    assert VirtualServer.objects.get(pk=cast.server.pk).allow_anonymous is False


def test_every_setting_the_domain_layer_accepts_is_on_some_tab(cast):
    from servers.services.virtual_servers import EDITABLE_FIELDS

    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk])
    pages = "".join(
        client.get(f"{url}?tab={tab}").content.decode()
        for tab in ("general", "access", "messages", "delivery", "antispam", "filters", "outbound")
    )
    for name in EDITABLE_FIELDS:
        assert f'name="{name}"' in pages


def test_state_toolbar_changes_the_desired_state_and_answers_with_the_partial(cast):
    client = client_for(cast.alice)
    url = reverse("console:server-state", args=[cast.server.pk])
    response = client.post(url, {"action": "start"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200 and b'data-testid="server-state"' in response.content
    assert b"<html" not in response.content
    assert VirtualServer.objects.get(pk=cast.server.pk).desired_state == "running"
    client.post(url, {"action": "pause"}, HTTP_HX_REQUEST="true")
    assert VirtualServer.objects.get(pk=cast.server.pk).desired_state == "paused"
    assert AuditEntry.objects.filter(action="pause_virtual_server", actor="alice").exists()


def test_node_service_can_be_stopped_by_an_administrator(cast):
    client = client_for(cast.alice)
    client.post(reverse("console:node-service-state"), {"action": "stop"})
    assert services.local_node().smtp_service_state == "stopped"
    client.post(reverse("console:node-service-state"), {"action": "start"})
    assert services.local_node().smtp_service_state == "running"


def test_queue_lists_waiting_mail_and_freezes_and_deletes_it(cast):
    from servers import mailstore
    from servers.delivery.models import QueuedMessage

    mailstore.enqueue(
        cast.server.home_dir, "ann@lab.example.test", ["bob@remote.example"], [b"Subject: hi\r\n\r\nhello\r\n"]
    )
    client = client_for(cast.alice)
    url = reverse("console:server-queue", args=[cast.server.pk])
    html = client.get(url).content.decode()
    assert "bob@remote.example" in html and "ann@lab.example.test" in html
    message = QueuedMessage.objects.get(server=cast.server)
    client.post(url, {"message": message.pk, "action": "freeze"})
    assert QueuedMessage.objects.get(pk=message.pk).frozen
    assert "Frozen" in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    assert (
        client.post(
            reverse("console:server-queue", args=[cast.other_server.pk]), {"message": message.pk, "action": "delete"}
        ).status_code
        == 404
    )
    client.post(url, {"message": message.pk, "action": "delete"})
    assert not QueuedMessage.objects.filter(pk=message.pk).exists()


def test_delivery_tab_saves_settings_and_never_shows_the_smart_host_password(cast):
    from servers.delivery.services import delivery_settings

    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=delivery"
    page = client.get(url).content.decode()
    assert 'name="delivery-smart_host"' in page
    data = {"form": "delivery"}
    settings_obj = delivery_settings(cast.server)
    for name, value in (
        ("first_retry_interval_s", 60),
        ("second_retry_interval_s", 600),
        ("third_retry_interval_s", 600),
        ("subsequent_retry_interval_s", 900),
        ("expiration_timeout_s", 172800),
        ("outbound_timeout_s", 600),
        ("delay_notification_s", 43200),
        ("smart_host_port", 25),
        ("outbound_port", 25),
        ("max_outbound_connections", 1000),
    ):
        data[f"delivery-{name}"] = str(value) if hasattr(settings_obj, name) else ""
    data.update(
        {
            "delivery-smart_host": "relay.example.test",
            "delivery-smart_host_username": "u",
            "delivery-smart_host_password": "s3cret-Pass",
        }
    )
    response = client.post(url, data, follow=True)
    html = response.content.decode()
    assert "First retry interval (seconds): 600 \u2192 60" in html and "Smart host password: changed" in html
    assert "s3cret-Pass" not in html
    settings_obj = delivery_settings(cast.server)
    assert settings_obj.smart_host == "relay.example.test"
    assert stored_secrets.reveal(settings_obj.smart_host_password) == "s3cret-Pass"
    data["delivery-smart_host_password"] = ""
    client.post(url, data)
    assert stored_secrets.reveal(delivery_settings(cast.server).smart_host_password) == "s3cret-Pass"


# -- domains ------------------------------------------------------------------------------------------


def test_alias_and_remote_domains_are_added_and_listed_with_their_types(cast):
    client = client_for(cast.alice)
    url = reverse("console:server-domains", args=[cast.server.pk])
    client.post(url, {"name": "alias.example.test", "type": "alias", "alias_of": "lab.example.test"})
    client.post(url, {"name": "partner.example", "type": "remote", "relay_allowed": "on"})
    html = client.get(url).content.decode()
    assert "alias.example.test" in html and "Alias" in html and "of lab.example.test" in html
    assert "partner.example" in html and "(relay allowed)" in html


def test_domain_refusal_is_shown_next_to_the_field(cast):
    client = client_for(cast.alice)
    response = client.post(
        reverse("console:server-domains", args=[cast.server.pk]), {"name": "alias2.example.test", "type": "alias"}
    )
    assert b'data-field="alias_of"' in response.content and b"field-error" in response.content


def test_set_default_lock_and_remove_a_domain(cast):
    client = client_for(cast.alice)
    action = reverse("console:domain-action", args=[cast.domain.pk])
    client.post(action, {"action": "default"})
    assert Domain.objects.get(pk=cast.domain.pk).is_default
    client.post(action, {"action": "lock"})
    assert Domain.objects.get(pk=cast.domain.pk).is_locked
    other = reverse("console:domain-action", args=[cast.other_domain.pk])
    client.post(other, {"action": "remove"})
    assert not Domain.objects.filter(pk=cast.other_domain.pk).exists()
    response = client.post(action, {"action": "remove"}, follow=True)
    assert "default domain cannot be deleted" in response.content.decode()


# -- mailboxes and groups -----------------------------------------------------------------------------


def test_adding_a_mailbox_with_a_weak_password_is_refused_with_the_rule(cast):
    client = client_for(cast.alice)
    url = reverse("console:mailbox-new", args=[cast.domain.pk])
    assert b"8 characters" in client.get(url).content
    response = client.post(url, {"local_part": "bob", "password": "short"})
    assert b'data-field="password"' in response.content and b"upper-case" in response.content
    client.post(url, {"local_part": "bob", "display_name": "Bob B", "password": PASSWORD, "quota_kb": "100"})
    mailbox = Mailbox.objects.get(local_part="bob")
    assert mailbox.quota_bytes == 100 * 1024 and mailbox.display_name == "Bob B"


def test_mailbox_list_has_the_exchange_columns_and_searches_server_side(cast):
    for name in ("ann", "ben", "cy"):
        services.add_mailbox(cast.domain, name, PASSWORD, display_name=name.title(), actor="test")
    services.record_logon(Mailbox.objects.get(local_part="ann").pk, "198.51.100.4")
    client = client_for(cast.alice)
    html = client.get(reverse("console:domain", args=[cast.domain.pk])).content.decode()
    for column in ("Mailbox", "Display name", "Size (KB)", "Total items", "Last logon time", "Last logged on by"):
        assert column in html
    assert "198.51.100.4" in html
    found = client.get(reverse("console:domain", args=[cast.domain.pk]) + "?q=be").content.decode()
    assert "ben@" in found and "ann@" not in found


def test_mailbox_password_lock_and_delete_keeping_the_mail(cast):
    mailbox = services.add_mailbox(cast.domain, "eve", PASSWORD, actor="test")
    client = client_for(cast.alice)
    url = reverse("console:mailbox", args=[mailbox.pk])
    assert b"upper-case" in client.post(url, {"form": "password", "password": "weakweak"}).content
    client.post(url, {"form": "password", "password": "Another-Pass-7"})
    services.authenticate_mailbox("eve@dora.example.test", "Another-Pass-7")
    client.post(url, {"form": "lock"})
    assert Mailbox.objects.get(pk=mailbox.pk).is_locked
    client.post(url, {"form": "properties", "display_name": "Eve", "quota_kb": "", "quota_messages": "5"})
    assert Mailbox.objects.get(pk=mailbox.pk).quota_messages == 5
    maildir = mailbox.maildir
    client.post(url, {"form": "delete", "remove_mail": "0"})
    assert not Mailbox.objects.filter(pk=mailbox.pk).exists() and maildir.is_dir()


def test_group_address_gets_members(cast):
    ann = services.add_mailbox(cast.domain, "ann", PASSWORD, actor="test")
    client = client_for(cast.alice)
    response = client.post(reverse("console:group-new", args=[cast.domain.pk]), {"local_part": "info"})
    group = GroupAddress.objects.get(local_part="info", domain=cast.domain)
    assert response["Location"] == reverse("console:group", args=[group.pk])
    client.post(reverse("console:group", args=[group.pk]), {"members": [ann.pk]})
    assert list(group.members.all()) == [ann]
    client.post(reverse("console:group", args=[group.pk]), {"action": "remove"})
    assert not GroupAddress.objects.filter(pk=group.pk).exists()


# -- bulk ---------------------------------------------------------------------------------------------


def upload(text: str, name: str = "boxes.csv"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


def test_import_dry_run_shows_row_errors_and_creates_nothing(cast):
    services.add_mailbox(cast.domain, "taken", PASSWORD, actor="test")
    csv_text = (
        "local_part,password,display_name,quota_kb\n"
        "good,Good-Pass-1,Good,10\n"
        "bad name,Good-Pass-1,,\n"
        "weak,weak,,\n"
        "taken,Good-Pass-1,,\n"
        "good,Good-Pass-1,,\n"
        "q,Good-Pass-1,,lots\n"
    )
    client = client_for(cast.alice)
    response = client.post(
        reverse("console:domain-import", args=[cast.domain.pk]), {"csv_file": upload(csv_text), "dry_run": "on"}
    )
    html = response.content.decode()
    assert "6 rows, 5 with errors" in html
    assert "not a valid mailbox name" in html and "at least 8 characters" in html
    assert "already exists" in html and "also on line 2" in html and "quota_kb" in html
    assert Mailbox.objects.filter(domain=cast.domain).count() == 1
    response = client.post(reverse("console:domain-import", args=[cast.domain.pk]), {"csv_file": upload(csv_text)})
    assert "Nothing was created" in response.content.decode()
    assert Mailbox.objects.filter(domain=cast.domain).count() == 1


def test_import_after_a_clean_dry_run_creates_every_row(cast):
    csv_text = "local_part,password,display_name\nann,Good-Pass-1,Ann\nben,Good-Pass-2,Ben\n"
    client = client_for(cast.alice)
    url = reverse("console:domain-import", args=[cast.domain.pk])
    response = client.post(url, {"csv_file": upload(csv_text), "dry_run": "on"})
    assert b'data-testid="import-confirm"' in response.content and b"Good-Pass" not in response.content
    client.post(url, {"confirm": "1"})
    assert sorted(Mailbox.objects.filter(domain=cast.domain).values_list("local_part", flat=True)) == ["ann", "ben"]


def test_export_lists_the_domains_mailboxes_as_csv_without_passwords(cast):
    services.add_mailbox(cast.domain, "ann", PASSWORD, display_name="Ann", actor="test")
    response = client_for(cast.alice).get(reverse("console:domain-export", args=[cast.domain.pk]))
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    lines = response.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("local_part,password,display_name,quota_kb,quota_messages,is_locked,")
    assert lines[1].startswith("ann,,Ann,") and "ann@dora.example.test" in lines[1]
    assert PASSWORD not in response.content.decode("utf-8-sig")


def excel_1251_file(rows: list[str]) -> bytes:
    """What Russian Excel's "CSV (разделители — запятые)" writes: Windows-1251, semicolons, CRLF."""
    return "\r\n".join(["local_part;password;display_name;quota_kb", *rows, ""]).encode("cp1251")


def test_an_excel_windows_1251_semicolon_file_imports_and_the_dry_run_says_how_it_was_read(cast):
    from django.core.files.uploadedfile import SimpleUploadedFile

    raw = excel_1251_file(["ivanov;Good-Pass-1;Иванов Иван;2048", "petrova;Good-Pass-2;Петрова Анна;"])
    client = client_for(cast.alice)
    url = reverse("console:domain-import", args=[cast.domain.pk])
    response = client.post(url, {"csv_file": SimpleUploadedFile("boxes.csv", raw), "dry_run": "on"})
    html = response.content.decode()
    assert "Read as Windows-1251, columns separated by semicolons." in html
    assert "Иванов Иван" in html and "2 rows, 0 with errors" in html
    client.post(url, {"confirm": "1"})
    imported = Mailbox.objects.get(domain=cast.domain, local_part="ivanov")
    assert imported.display_name == "Иванов Иван" and imported.quota_bytes == 2048 * 1024
    assert Mailbox.objects.get(domain=cast.domain, local_part="petrova").display_name == "Петрова Анна"


@pytest.mark.parametrize(
    ("raw", "described"),
    [
        (
            "local_part,password,display_name\nann,Good-Pass-1,Анна\n".encode(),
            "Read as UTF-8, columns separated by commas.",
        ),
        (
            "\ufefflocal_part;password;display_name\nann;Good-Pass-1;Анна\n".encode(),
            "Read as UTF-8 with a byte-order mark, columns separated by semicolons.",
        ),
    ],
)
def test_utf8_files_with_or_without_a_bom_and_either_separator_import(cast, raw, described):
    from django.core.files.uploadedfile import SimpleUploadedFile

    url = reverse("console:domain-import", args=[cast.domain.pk])
    html = (
        client_for(cast.alice)
        .post(url, {"csv_file": SimpleUploadedFile("boxes.csv", raw), "dry_run": "on"})
        .content.decode()
    )
    assert described in html and "Анна" in html and "1 row, 0 with errors" in html


@pytest.mark.parametrize("export_format", ["excel", "utf8"])
def test_an_export_in_either_format_imports_again_unchanged_into_another_domain(cast, export_format):
    from django.core.files.uploadedfile import SimpleUploadedFile

    services.add_mailbox(
        cast.domain, "ann", PASSWORD, display_name="Анна Сергеевна", quota_bytes=4096 * 1024, actor="t"
    )
    services.add_mailbox(cast.domain, "ben", PASSWORD, display_name="Ben", quota_messages=500, actor="t")
    services.set_mailbox_lock(Mailbox.objects.get(domain=cast.domain, local_part="ben"), True)
    client = client_for(cast.alice)
    exported = client.get(reverse("console:domain-export", args=[cast.domain.pk]), {"format": export_format}).content
    if export_format == "excel":
        assert b";" in exported.splitlines()[0] and "Анна".encode("cp1251") in exported

    target = services.add_domain(cast.server, "copy.example.test", actor="t")
    url = reverse("console:domain-import", args=[target.pk])
    response = client.post(url, {"csv_file": SimpleUploadedFile("export.csv", exported), "dry_run": "on"})
    assert "2 rows, 0 with errors" in response.content.decode()
    assert response.content.decode().count('data-testid="password-generated"') == 2
    client.post(url, {"confirm": "1"})

    def settings_of(domain):
        return sorted(
            Mailbox.objects.filter(domain=domain).values_list(
                "local_part", "display_name", "quota_bytes", "quota_messages", "is_locked"
            )
        )

    assert settings_of(target) == settings_of(cast.domain)
    # No password travels in an export: the copy has a random one until an administrator sets it.
    from servers.services.mailboxes import LoginRefusedError, authenticate_mailbox

    with pytest.raises(LoginRefusedError):
        authenticate_mailbox(f"ann@{target.name}", PASSWORD)


def test_an_unknown_export_format_is_a_400(cast):
    response = client_for(cast.alice).get(reverse("console:domain-export", args=[cast.domain.pk]), {"format": "xls"})
    assert response.status_code == 400


# -- logs and overview --------------------------------------------------------------------------------


def test_audit_log_filters_by_user_object_and_time(cast):
    client = client_for(cast.alice)
    services.pause_server(cast.server, actor="oscar")
    html = client.get(reverse("console:audit") + "?user=oscar").content.decode()
    assert "pause_virtual_server" in html and "create_virtual_server" not in html
    assert "desired_state:</span> stopped \u2192 paused" in html
    html = client.get(reverse("console:audit") + "?object=Other+server").content.decode()
    assert "Other server" in html and "pause_virtual_server" not in html
    assert "No entries match" in client.get(reverse("console:audit") + "?until=2000-01-01").content.decode()


def test_logons_are_scoped_to_the_users_mailboxes(cast):
    mine = services.add_mailbox(cast.domain, "ann", PASSWORD, actor="test")
    theirs = services.add_mailbox(cast.other_domain, "zed", PASSWORD, actor="test")
    services.record_logon(mine.pk, "203.0.113.1")
    services.record_logon(theirs.pk, "203.0.113.2")
    html = client_for(cast.dora).get(reverse("console:logons")).content.decode()
    assert "203.0.113.1" in html and "203.0.113.2" not in html


def test_dashboard_and_services_render_with_vendor_assets_from_the_wheels(cast):
    client = client_for(cast.alice)
    html = client.get(reverse("console:dashboard")).content.decode()
    assert "/static/vendor/bootstrap/bootstrap.min.css" in html and "/static/vendor/plotly/plotly.min.js" in html
    assert "https://" not in html.split("<body")[0]
    services_html = client.get(reverse("console:services")).content.decode()
    for name in ("Simple Mail Transfer Protocol", "Celery worker", "Celery beat", "Redis", "Database"):
        assert name in services_html
    from django.contrib.staticfiles import finders

    assert finders.find("vendor/bootstrap/bootstrap.min.css") and finders.find("vendor/plotly/plotly.min.js")


def test_live_state_poll_after_the_session_ended_sends_the_browser_to_sign_in(cast):
    client = Client()
    response = client.get(
        reverse("console:server-state", args=[cast.server.pk]),
        HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL="http://testserver/console/servers/",
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/console/login/?next=%2Fconsole%2Fservers%2F"


def test_services_view_starts_and_stops_the_nodes_pop3_service(cast):
    pop3 = services.create_pop3_service(ip_address="127.0.0.1", port=free_port(), start=False, actor="test")
    client = client_for(cast.alice)
    assert b'data-testid="service-pop3"' in client.get(reverse("console:services")).content
    client.post(reverse("console:service-state", args=["pop3"]), {"action": "start"})
    pop3.refresh_from_db()
    assert pop3.desired_state == "running"
    client.post(reverse("console:service-state", args=["smtp"]), {"action": "pause"})
    assert services.local_node().smtp_service_state == "paused"


def test_vendor_assets_are_served_by_the_app_itself(cast):
    response = Client().get("/static/vendor/bootstrap/bootstrap.min.css")
    assert response.status_code == 200
    assert b"Bootstrap" in b"".join(response.streaming_content)[:400]


def test_security_tab_opens_for_an_administrator(cast):
    response = client_for(cast.alice).get(reverse("console:server", args=[cast.server.pk]) + "?tab=security")
    assert response.status_code == 200 and "Operators" in response.content.decode()


def test_property_sheet_offers_only_settings_the_domain_layer_accepts(cast, monkeypatch):
    from servers.services import virtual_servers

    url = reverse("console:server", args=[cast.server.pk])
    client = client_for(cast.alice)
    monkeypatch.setattr(virtual_servers, "EDITABLE_FIELDS", ("name", "ip_address", "port"))
    assert 'name="max_message_size_kb"' not in client.get(url + "?tab=messages").content.decode()
    assert client.post(url + "?tab=messages", {"max_message_size_kb": "1"}).status_code == 404


def test_administrator_chooses_a_servers_operators_on_the_security_tab(cast):
    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=security"
    response = client.post(url, {"operators": [cast.dora.pk]}, follow=True)
    assert f"Operators: {cast.dora.username}" in response.content.decode()
    assert list(VirtualServer.objects.get(pk=cast.server.pk).operators.all()) == [cast.dora]
    assert client_for(cast.oscar).post(url, {"operators": [cast.oscar.pk]}).status_code == 404


def test_operator_chooses_domain_administrators_but_a_domain_administrator_cannot(cast):
    url = reverse("console:domain-administrators", args=[cast.domain.pk])
    client_for(cast.oscar).post(url, {"administrators": [cast.dora.pk, cast.oscar.pk]})
    assert set(Domain.objects.get(pk=cast.domain.pk).administrators.all()) == {cast.dora, cast.oscar}
    assert client_for(cast.dora).post(url, {"administrators": []}).status_code == 403


def test_current_sessions_lists_what_the_worker_reports_and_terminates_one(cast):
    import json
    import time

    from servers.livestate import redis_client, sessions_key, terminate_key

    redis = redis_client()
    key = sessions_key("smtp", cast.server.pk)
    redis.hset(
        key,
        "s1",
        json.dumps(
            {
                "id": "s1",
                "protocol": "SMTP",
                "client": "198.51.100.9",
                "user": "",
                "connected_at": time.time() - 5,
                "state": "RCPT",
                "messages": 1,
                "bytes": 321,
                "tls": False,
            }
        ),
    )
    try:
        client = client_for(cast.alice)
        url = reverse("console:server-sessions", args=[cast.server.pk])
        html = client.get(url).content.decode()
        assert "198.51.100.9" in html and "RCPT" in html
        assert b"<html" not in client.get(url, HTTP_HX_REQUEST="true").content
        client.post(url, {"session": "s1"})
        assert redis.sismember(terminate_key("smtp", cast.server.pk), "s1")
        response = client.post(url, {"session": "gone"}, follow=True)
        assert "no such session" in response.content.decode()
    finally:
        redis.delete(key, terminate_key("smtp", cast.server.pk))


def test_access_tab_adds_and_removes_connection_and_relay_entries(cast):
    client = client_for(cast.alice)
    url = reverse("console:server-rules", args=[cast.server.pk])
    client.post(url, {"list": "relay", "action": "add", "kind": "network", "value": "192.0.2.9/24"})
    rule = cast.server.relay_rules.get()
    assert rule.value == "192.0.2.0/24"
    page = client.get(reverse("console:server", args=[cast.server.pk]) + "?tab=access").content.decode()
    assert "192.0.2.0/24" in page
    response = client.post(
        url, {"list": "access", "action": "add", "kind": "address", "value": "not-an-ip"}, follow=True
    )
    assert response.status_code == 200 and not cast.server.access_rules.exists()
    assert "alert-danger" in response.content.decode()
    client.post(url, {"list": "relay", "action": "remove", "rule": rule.pk})
    assert not cast.server.relay_rules.exists()


def test_remote_domain_gets_its_own_route_and_keeps_the_password_when_left_empty(cast):
    from servers.delivery.models import RemoteDomainRoute

    partner = services.add_domain(cast.server, "partner.example", type="remote", actor="test")
    client = client_for(cast.alice)
    url = reverse("console:domain-route", args=[partner.pk])
    client.post(url, {"smart_host": "relay.example.test", "port": "2525", "username": "u", "password": "Pw-123456"})
    html = client.get(reverse("console:server-domains", args=[cast.server.pk])).content.decode()
    assert "via relay.example.test:2525" in html
    client.post(url, {"smart_host": "relay.example.test", "port": "2526", "username": "u", "password": ""})
    route = RemoteDomainRoute.objects.get(domain=partner)
    assert (route.port, stored_secrets.reveal(route.password)) == (2526, "Pw-123456")
    client.post(url, {"smart_host": "", "port": "", "username": "", "password": ""})
    assert not RemoteDomainRoute.objects.filter(domain=partner).exists()
    assert client.get(reverse("console:domain-route", args=[cast.domain.pk])).status_code == 404


def test_anti_spam_tab_saves_zone_names_and_shows_a_bad_one_next_to_its_field(cast):
    client = client_for(cast.alice)
    url = reverse("console:server", args=[cast.server.pk]) + "?tab=antispam"
    data = {"form": "server", "dnsbl_action": "reject", "greylisting": "on", "greylisting_delay_s": "120"}
    data |= {"spf_action": "none", "dmarc_action": "none"}  # every select of the tab, as a browser posts it

    page = client.post(url, {**data, "dnsbl_zones": "bad_zone.test"}).content.decode()
    assert "is not a valid domain name" in page

    client.post(url, {**data, "dnsbl_zones": "zen.example.test\r\nbl.test"})
    cast.server.refresh_from_db()
    assert (cast.server.dnsbl_zones, cast.server.dnsbl_action, cast.server.greylisting) == (
        "zen.example.test\nbl.test",
        "reject",
        True,
    )
