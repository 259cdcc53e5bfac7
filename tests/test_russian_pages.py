"""The translated console and webmail pages asked for in Russian: their own labels are Russian, none left in English.

Labels that come from frontend/forms.py (the console's form fields, the wizard's step titles, the password
rule) and refusals from servers/ are not translated yet, so these tests check only the pages' own text.
"""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from servers import mailstore, services
from servers.delivery.models import QueuedMessage
from tests.factories import make_imap_service
from tests.panel_helpers import PASSWORD, clear_login_throttle, make_cast
from tests.test_language import visible_text
from tests.webmail_helpers import make_lab, signed_in_client, store, text_message

pytestmark = pytest.mark.django_db

RUSSIAN = {"HTTP_ACCEPT_LANGUAGE": "ru-RU,ru;q=0.9,en;q=0.5"}


@pytest.fixture
def cast(fast_hashing):
    clear_login_throttle()
    return make_cast()


def console_in_russian(user) -> Client:
    client = Client(**RUSSIAN)
    client.force_login(user)
    return client


def english_left(page: bytes | str, labels: list[str]) -> list[str]:
    """Which of the page's former English labels still show as words in its visible text."""
    text = html.unescape(visible_text(page if isinstance(page, bytes) else page.encode()))
    return [label for label in labels if re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", text)]


def get_ok(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    page = response.content.decode()
    assert '<html lang="ru">' in page
    return page


TREE_LABELS = [
    "Dashboard",
    "local node",
    "SMTP virtual servers",
    "Domains",
    "Current Sessions",
    "Queue",
    "POP3 service",
    "IMAP service",
    "Logons",
    "Services",
    "Audit log",
    "no domains",
]


def test_the_server_list_and_the_tree_are_russian(cast):
    page = get_ok(console_in_russian(cast.alice), reverse("console:servers"))
    for russian in ("Виртуальные SMTP-серверы", "Запустить все", "Остановить все", "Новый виртуальный SMTP-сервер…"):
        assert russian in page
    assert "Остановлен" in page and "Служба POP3" in page and "Журнал аудита" in page
    assert 'data-testid="start"' in page and "▶ Запустить" in page and "■ Остановить" in page
    assert not english_left(
        page,
        [
            *TREE_LABELS,
            "Start all",
            "Pause all",
            "Stop all",
            "New SMTP Virtual Server",
            "Name",
            "IP address",
            "Port",
            "State",
            "Toolbar",
            "Start",
            "Pause",
            "Stop",
            "Stopped",
            "Running",
            "Service on",
            "No virtual servers",
        ],
    )


def test_the_server_wizard_is_russian_apart_from_its_form_labels(cast):
    page = get_ok(console_in_russian(cast.alice), reverse("console:server-new"))
    assert "Мастер создания виртуального SMTP-сервера" in page and "Введите имя нового виртуального сервера." in page
    assert "Далее ›" in page and "Отмена" in page
    assert not english_left(page, ["New SMTP Virtual Server Wizard", "Type a name", "Next", "Cancel", "Finish", "Back"])


def test_the_queue_and_the_current_sessions_are_russian(cast):
    mailstore.enqueue(
        cast.server.home_dir, "ann@lab.example.test", ["bob@remote.example"], [b"Subject: hi\r\n\r\nhello\r\n"]
    )
    client = console_in_russian(cast.alice)
    url = reverse("console:server-queue", args=[cast.server.pk])
    queue = get_ok(client, url)
    for russian in ("Очередь", "Отправитель", "Получатели", "Повторить", "Заморозить", "Удалить (NDR)"):
        assert russian in queue
    assert "Удалить это сообщение без уведомления?" in queue  # the confirmation too
    assert 'bob@remote.example <span class="text-body-secondary">(ожидает)</span>' in queue
    assert not english_left(
        queue,
        [
            *TREE_LABELS,
            "Sender",
            "Recipients",
            "Size",
            "Queued",
            "Attempts",
            "Next retry",
            "Last reply",
            "Retry",
            "Freeze",
            "Delete",
            "Mail waiting",
        ],
    )

    message = QueuedMessage.objects.get(server=cast.server)
    followed = client.post(url, {"message": message.pk, "action": "freeze"}, follow=True).content.decode()
    assert "Сообщение заморожено." in followed and "Заморожено" in followed and "Разморозить" in followed

    sessions = get_ok(client, reverse("console:server-sessions", args=[cast.server.pk]))
    assert "Текущие сеансы" in sessions and "Открытых сеансов нет." in sessions and "Последняя команда" in sessions
    assert not english_left(
        sessions,
        ["Client", "Signed in as", "Connected", "Duration", "Last command", "Messages", "Bytes", "No open sessions"],
    )


def test_the_imap_service_pages_are_russian_apart_from_its_form_labels(cast):
    imap = make_imap_service()
    client = console_in_russian(cast.alice)
    page = get_ok(client, reverse("console:imap", args=[imap.pk]))
    for russian in (
        "Служба IMAP · Свойства",
        "Запустить",
        "Приостановить",
        "Сохранить",
        "Почтовые клиенты подключаются",
    ):
        assert russian in page
    assert not english_left(
        page,
        ["IMAP service", "Properties", "Start", "Pause", "Stop", "Save", "Mail clients connect", "open sessions"],
    )
    assert "Ничего не изменилось." not in page

    sessions = get_ok(client, reverse("console:imap-sessions", args=[imap.pk]))
    assert "Служба IMAP · Текущие сеансы" in sessions and "Папка" in sessions
    assert not english_left(sessions, ["IMAP service", "Current Sessions", "Connections open now", "Folder"])


def test_the_pop3_domains_logons_and_audit_log_are_russian(cast):
    client = console_in_russian(cast.alice)
    pop3 = get_ok(client, reverse("console:pop3"))
    assert "Служба POP3 · Домены" in pop3 and "Почтовые ящики" in pop3 and "Не заблокирован" in pop3
    assert not english_left(pop3, ["POP3 service", "Domain", "Server", "Mailboxes", "State", "Unlocked", "Search"])

    logons = get_ok(client, reverse("console:logons"))
    assert "Входы" in logons and "Время последнего доступа" in logons and "Входов нет." in logons
    assert not english_left(
        logons, ["Logons", "Mailbox", "Protocol", "Client address", "Logon time", "Last access time", "Search"]
    )

    audit = get_ok(client, reverse("console:audit"))
    assert "Журнал аудита" in audit and "Объект или действие" in audit and "Фильтр" in audit
    assert not english_left(audit, ["Audit log", "User", "Object or action", "Filter", "Time", "Action", "Change"])


def test_the_group_new_mailbox_import_and_route_pages_are_russian_apart_from_form_labels(cast):
    client = console_in_russian(cast.alice)
    group = services.add_group(cast.domain, "team", actor="test")
    services.add_mailbox(cast.domain, "ann", PASSWORD, actor="test")
    page = get_ok(client, reverse("console:group", args=[group.pk]))
    assert "группа рассылки" in page and "Сохранить участников" in page and "Удалить группу рассылки" in page
    assert "Удалить группу рассылки team@dora.example.test?" in page
    assert not english_left(page, ["group address", "Mail to this address", "Back to", "Save members", "Remove"])
    saved = client.post(reverse("console:group", args=[group.pk]), {"members": []}, follow=True).content.decode()
    assert "Участники team@dora.example.test сохранены (0)." in saved

    new = get_ok(client, reverse("console:mailbox-new", args=[cast.domain.pk]))
    assert "Новый почтовый ящик в dora.example.test" in new and "Создать почтовый ящик" in new
    assert not english_left(new, ["New mailbox in", "Create mailbox", "Cancel"])

    from django.core.files.uploadedfile import SimpleUploadedFile

    csv_text = "local_part,password,display_name,quota_kb\nfirst,Good-Pass-1,First,10\nsecond,Good-Pass-1,,\n"
    upload = SimpleUploadedFile("boxes.csv", csv_text.encode(), content_type="text/csv")
    url = reverse("console:domain-import", args=[cast.domain.pk])
    preview = client.post(url, {"csv_file": upload, "dry_run": "on"}).content.decode()
    assert "2 строки, с ошибками: 0" in preview and "Создать эти 2 почтовых ящика" in preview
    assert not english_left(
        preview, ["Import mailboxes", "Check / import", "Line", "Display name", "Quota", "Result", "rows", "Create"]
    )
    created = client.post(url, {"confirm": "1"}, follow=True).content.decode()
    assert "В dora.example.test созданы 2 почтовых ящика." in created

    partner = services.add_domain(cast.server, "partner.example", type="remote", actor="test")
    route = get_ok(client, reverse("console:domain-route", args=[partner.pk]))
    assert "Маршрут для partner.example" in route and "Применить" in route and "MX-узлы" in route
    assert not english_left(route, ["Route for", "remote domain of", "Mail for this domain", "Apply", "Cancel"])


# -- webmail ---------------------------------------------------------------------------------------


@pytest.fixture
def helena_in_russian(fast_hashing):
    lab = make_lab()
    store(lab.helena, text_message(subject="", sender="Карл <carl@outside.test>"))
    return signed_in_client(lab.helena, **RUSSIAN)


WEBMAIL_FRAME_LABELS = ["Compose", "Inbox", "Sent", "Drafts", "Trash", "Folders", "Password", "Sign out"]


def test_a_webmail_folder_is_russian(helena_in_russian):
    page = get_ok(helena_in_russian, reverse("webmail:folder", args=["inbox"]))
    assert "Входящие" in page and "(без темы)" in page and "Тема" in page
    assert not english_left(
        page,
        [
            *WEBMAIL_FRAME_LABELS,
            "no subject",
            "unread",
            "Subject",
            "Date",
            "Size",
            "From",
            "Search",
            "Move",
            "Copy",
            "Mark read",
            "Delete",
            "Newer",
            "Older",
            "Page",
        ],
    )


def test_compose_and_its_refusals_are_russian(helena_in_russian):
    page = get_ok(helena_in_russian, reverse("webmail:compose"))
    for russian in ("Новое сообщение", "Кому", "Копия", "Скрытая копия", "Вложения", "Сохранить копию в", "Отправить"):
        assert russian in page
    assert not english_left(
        page,
        [
            *WEBMAIL_FRAME_LABELS,
            "New message",
            "To",
            "Cc",
            "Bcc",
            "Subject",
            "Body",
            "Attachments",
            "Keep a copy in Sent",
            "Send",
            "Save draft",
        ],
    )
    refused = helena_in_russian.post(reverse("webmail:compose"), {"to": "no-address", "body": "x"})
    assert "'no-address' — не адрес электронной почты." in html.unescape(refused.content.decode())
    nobody = helena_in_russian.post(reverse("webmail:compose"), {"body": "x"}).content.decode()
    assert "Укажите хотя бы одного получателя." in nobody


def test_the_password_page_and_its_refusals_are_russian(helena_in_russian):
    url = reverse("webmail:password")
    page = get_ok(helena_in_russian, url)
    assert "Смена пароля" in page and "Текущий пароль" in page and "Подтверждение пароля" in page
    assert not english_left(
        page,
        [
            *WEBMAIL_FRAME_LABELS,
            "Change your password",
            "Current password",
            "New password",
            "Confirm password",
            "Change password",
            "At least 8 characters",
        ],
    )
    differing = {"current_password": "wrong", "new_password": "Brand-New-1", "confirm_password": "Brand-New-2"}
    refused = helena_in_russian.post(url, differing).content.decode()
    assert "Два новых пароля не совпадают." in refused


def test_the_folders_page_and_a_confirmation_are_russian(helena_in_russian):
    folders = get_ok(helena_in_russian, reverse("webmail:folders"))
    assert "Новая папка" in folders
    assert not english_left(folders, [*WEBMAIL_FRAME_LABELS, "New folder", "Create", "Rename", "Unread"])

    confirm = get_ok(helena_in_russian, reverse("webmail:empty_trash"))
    assert 'data-testid="confirm"' in confirm
    assert not english_left(confirm, [*WEBMAIL_FRAME_LABELS, "Empty Trash", "Cancel", "cannot be undone"])
