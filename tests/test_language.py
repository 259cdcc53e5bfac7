"""The interface language: the browser's choice by default, the switch, and the choice kept per user."""

from __future__ import annotations

import io
import re

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from frontend.language import LanguagePreference, mailbox_owner, user_owner
from tests.factories import USER_PASSWORD
from tests.panel_helpers import clear_login_throttle
from tests.webmail_helpers import make_lab, signed_in_client

pytestmark = pytest.mark.django_db

CYRILLIC = re.compile("[а-яА-ЯёЁ]")


def visible_text(html: bytes) -> str:
    """The page's text without tags, scripts and the language switch (which names Русский on purpose)."""
    text = html.decode()
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", text, flags=re.S)
    return re.sub(r"<[^>]+>", " ", text)


def sign_in_console(client: Client, username: str) -> None:
    clear_login_throttle()
    response = client.post(reverse("console:login"), {"username": username, "password": USER_PASSWORD})
    assert response.status_code == 302, response.content[:300]


def test_the_console_sign_in_page_follows_the_browsers_language():
    russian = Client(HTTP_ACCEPT_LANGUAGE="ru-RU,ru;q=0.9,en;q=0.5").get(reverse("console:login"))
    assert '<html lang="ru">' in russian.content.decode()
    assert "Войти" in russian.content.decode() and "Имя пользователя" in russian.content.decode()
    english = Client(HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").get(reverse("console:login"))
    assert '<html lang="en">' in english.content.decode()
    assert not CYRILLIC.search(visible_text(english.content))


def test_a_language_the_console_does_not_have_falls_back_to_english():
    page = Client(HTTP_ACCEPT_LANGUAGE="de-DE,de;q=0.9").get(reverse("console:login")).content.decode()
    assert '<html lang="en">' in page and "User name" in page


def test_the_switch_sets_the_language_and_returns_to_the_page(client):
    response = client.post(reverse("set-language"), {"language": "ru", "next": reverse("console:login")})
    assert response.status_code == 302 and response["Location"] == reverse("console:login")
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ru"
    page = client.get(reverse("console:login"), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Войдите, чтобы управлять почтовыми серверами." in page


def test_the_switch_refuses_to_send_the_browser_elsewhere_or_to_set_an_unknown_language(client):
    response = client.post(reverse("set-language"), {"language": "ru", "next": "https://evil.example/"})
    assert response["Location"] == "/"
    response = client.post(reverse("set-language"), {"language": "xx", "next": "/"})
    assert settings.LANGUAGE_COOKIE_NAME not in response.cookies
    assert client.get(reverse("set-language")).status_code == 405


def test_a_console_users_choice_is_kept_and_restored_in_another_browser(people):
    first_browser = Client()
    sign_in_console(first_browser, "alice")
    first_browser.post(reverse("set-language"), {"language": "ru", "next": "/"})
    assert LanguagePreference.objects.get(owner=user_owner(people.alice.pk)).language == "ru"

    second_browser = Client(HTTP_ACCEPT_LANGUAGE="en")
    sign_in_console(second_browser, "alice")
    assert second_browser.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ru"
    dashboard = second_browser.get(reverse("console:dashboard")).content.decode()
    assert '<html lang="ru">' in dashboard and "Выйти" in dashboard


def test_a_language_chosen_before_signing_in_is_kept_for_the_user(people):
    browser = Client()
    browser.post(reverse("set-language"), {"language": "ru", "next": "/"})
    sign_in_console(browser, "bob")
    assert LanguagePreference.objects.get(owner=user_owner(people.bob.pk)).language == "ru"


def test_a_mailbox_owners_choice_is_kept_for_webmail(fast_hashing):
    lab = make_lab()
    browser = signed_in_client(lab.helena)
    browser.post(reverse("set-language"), {"language": "ru", "next": "/mail/"})
    assert LanguagePreference.objects.get(owner=mailbox_owner(lab.helena.pk)).language == "ru"

    other_browser = signed_in_client(lab.helena, HTTP_ACCEPT_LANGUAGE="en")
    inbox = other_browser.get(reverse("webmail:folder", args=["inbox"])).content.decode()
    assert "Написать" in inbox and "Входящие" in inbox


@pytest.mark.parametrize(
    ("count", "words"),
    [(1, "1 сообщение"), (3, "3 сообщения"), (5, "5 сообщений"), (11, "11 сообщений"), (21, "21 сообщение")],
)
def test_russian_counts_take_the_right_plural_form(count, words):
    from django.utils import translation
    from django.utils.translation import ngettext

    with translation.override("ru"):
        assert ngettext("%(counter)s message", "%(counter)s messages", count) % {"counter": count} == words


def test_a_domains_report_language_is_set_on_every_face_by_those_who_manage_its_server(people):
    from django.core.management import call_command

    from servers import services
    from servers.models import Domain
    from tests.api_factories import client_for as api_client_for
    from tests.factories import make_server

    server = make_server(domain="report.test")
    services.add_domain(server, "other.test")
    domain = Domain.objects.get(name="report.test")

    browser = Client()
    sign_in_console(browser, "alice")
    browser.post(reverse("console:domain-language", args=[domain.pk]), {"language": "ru"})
    assert Domain.objects.get(pk=domain.pk).language == "ru"
    assert browser.post(reverse("console:domain-language", args=[domain.pk]), {"language": "xx"}).status_code == 302
    assert Domain.objects.get(pk=domain.pk).language == "ru"  # refused with a message, unchanged

    api = api_client_for(people.alice)
    response = api.patch(f"/api/v1/domains/{domain.pk}/", {"language": ""}, format="json")
    assert response.status_code == 200 and response.json()["language"] == ""
    assert api.patch(f"/api/v1/domains/{domain.pk}/", {"language": "de"}, format="json").status_code == 400

    call_command("smtpsvc", "domain", "language", server.name, "other.test", "ru", stdout=io.StringIO())
    assert Domain.objects.get(name="other.test").language == "ru"

    stranger = Client()
    sign_in_console(stranger, "dave")
    assert stranger.post(reverse("console:domain-language", args=[domain.pk]), {"language": "en"}).status_code == 404


# -- my account and the time zone -------------------------------------------------------------------


def test_a_console_user_changes_their_own_password_on_my_account(people):
    browser = Client()
    sign_in_console(browser, "bob")
    url = reverse("console:account")
    assert browser.get(url).status_code == 200
    wrong = browser.post(
        url,
        {
            "form": "password",
            "old_password": "nope",
            "new_password1": "N3w-Pass-word",
            "new_password2": "N3w-Pass-word",
        },
    )
    assert wrong.status_code == 400 and 'data-field="old_password"' in wrong.content.decode()
    done = browser.post(
        url,
        {
            "form": "password",
            "old_password": USER_PASSWORD,
            "new_password1": "N3w-Pass-word",
            "new_password2": "N3w-Pass-word",
        },
    )
    assert done.status_code == 302
    assert browser.get(reverse("console:dashboard")).status_code == 200  # this session stays signed in
    people.bob.refresh_from_db()
    assert people.bob.check_password("N3w-Pass-word") and not people.bob.check_password(USER_PASSWORD)
    from servers.models import AuditEntry

    assert AuditEntry.objects.filter(action="change_own_password", actor="bob").exists()


def test_times_follow_the_users_time_zone_and_it_is_kept_for_the_next_sign_in(people):
    import datetime as dt

    from servers.models import AuditEntry

    entry = AuditEntry.objects.create(actor="alice", action="probe_time_zone", object_type="node", object_repr="probe")
    AuditEntry.objects.filter(pk=entry.pk).update(at=dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC))
    browser = Client()
    sign_in_console(browser, "alice")
    audit = reverse("console:audit") + "?user=alice"
    assert "2026-01-15 12:00:00" in browser.get(audit).content.decode()  # the server's zone (UTC in the tests)

    browser.post(reverse("console:account"), {"form": "time_zone", "time_zone": "Asia/Vladivostok"})
    assert "2026-01-15 22:00:00" in browser.get(audit).content.decode()
    assert (
        browser.post(reverse("console:account"), {"form": "time_zone", "time_zone": "Mars/Olympus"}).status_code == 400
    )

    another_browser = Client()
    sign_in_console(another_browser, "alice")
    assert "2026-01-15 22:00:00" in another_browser.get(audit).content.decode()


def test_a_mailbox_owner_chooses_the_time_zone_of_webmail(fast_hashing):
    from frontend.language import saved_time_zone

    lab = make_lab()
    browser = signed_in_client(lab.helena)
    response = browser.post(reverse("webmail:time_zone"), {"time_zone": "Europe/Moscow"})
    assert response.status_code == 302
    assert saved_time_zone(mailbox_owner(lab.helena.pk)) == "Europe/Moscow"
    assert 'value="Europe/Moscow" selected' in browser.get(reverse("webmail:password")).content.decode()
    assert browser.post(reverse("webmail:time_zone"), {"time_zone": "Nowhere/Land"}).status_code == 400
