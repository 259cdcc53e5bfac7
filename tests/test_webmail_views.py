"""The webmail through Django's test client: sign-in, the index, reading, sanitizing, 404s, CSRF, headers."""

from __future__ import annotations

import os
import re

import pytest
from django.test import Client
from django.urls import reverse

from frontend.webmail import folders, index, mime
from frontend.webmail.models import INBOX, MessageIndex
from servers import maildir as store_module
from servers import mailstore, services
from servers.maildir import MailboxLock
from servers.models import Logon
from tests.factories import PASSWORD
from tests.panel_helpers import clear_login_throttle
from tests.webmail_helpers import (
    HOSTILE_FRAGMENTS,
    HOSTILE_HTML,
    html_message,
    make_lab,
    signed_in_client,
    store,
    text_message,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(fast_hashing):
    return make_lab()


def inbox_rows(mailbox) -> list[MessageIndex]:
    return list(MessageIndex.objects.for_mailbox(mailbox.pk, INBOX).order_by("-delivered_at", "-id"))


def mark_index_fresh(mailbox) -> None:
    """Say the index matches every folder as it is now (for rows made in the database directly)."""
    for info in folders.account_for(mailbox).list_folders():  # makes the special-use folders first
        path = index.folder_path(mailbox.maildir, info.name)
        index.MailboxIndexState.objects.update_or_create(
            mailbox=mailbox,
            folder=info.name,
            defaults={
                "new_mtime_ns": (path / "new").stat().st_mtime_ns,
                "cur_mtime_ns": (path / "cur").stat().st_mtime_ns,
                "scanned_at_ns": 2**62,
            },
        )


def open_inbox(client: Client, **params):
    return client.get(reverse("webmail:folder", args=["inbox"]), params)


def stored_pk(client: Client, mailbox, uid: str) -> int:
    open_inbox(client)
    return MessageIndex.objects.get(mailbox=mailbox, uid=uid).pk


# -- sign-in ----------------------------------------------------------------------------------------


def test_a_stranger_gets_the_sign_in_form(client):
    response = client.get(reverse("webmail:sign_in"))
    assert response.status_code == 200 and b'name="address"' in response.content
    response = client.get(reverse("webmail:folder", args=["inbox"]))
    assert response.status_code == 302 and response["Location"] == reverse("webmail:sign_in")


def test_the_mailbox_password_signs_in_and_records_a_webmail_logon(lab):
    client = signed_in_client(lab.helena)
    response = open_inbox(client)
    assert response.status_code == 200 and b"helena@webmail.test" in response.content
    assert Logon.objects.filter(mailbox=lab.helena, protocol="WEBMAIL").count() == 1


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(lab, client):
    clear_login_throttle()
    wrong = client.post(reverse("webmail:sign_in"), {"address": "helena@webmail.test", "password": "Nope12345"})
    unknown = client.post(reverse("webmail:sign_in"), {"address": "nobody@webmail.test", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert b"address or password is incorrect" in wrong.content
    assert b"address or password is incorrect" in unknown.content


def test_a_locked_mailbox_cannot_sign_in_and_a_lock_ends_an_open_session(lab, client):
    session_client = signed_in_client(lab.helena)
    services.set_mailbox_lock(lab.helena, True)
    response = client.post(reverse("webmail:sign_in"), {"address": "helena@webmail.test", "password": PASSWORD})
    assert response.status_code == 403 and b"locked" in response.content
    assert open_inbox(session_client).status_code == 302


def test_failed_sign_ins_are_throttled_even_with_the_right_password_afterwards(lab, client, settings):
    clear_login_throttle()
    settings.MAILBOX_SIGNIN_FAILURES_PER_MAILBOX = 3
    for _ in range(3):
        client.post(reverse("webmail:sign_in"), {"address": "helena@webmail.test", "password": "Wrong1234"})
    response = client.post(reverse("webmail:sign_in"), {"address": "helena@webmail.test", "password": PASSWORD})
    assert response.status_code == 429 and b"Too many failed sign-ins" in response.content
    clear_login_throttle()


def test_webmail_creates_no_django_user_and_signing_out_keeps_the_console_session(lab):
    from django.contrib.auth.models import User

    admin = User.objects.create_superuser("alice", "alice@example.test", "Correct-Horse-9")
    client = signed_in_client(lab.helena)
    client.force_login(admin)
    assert User.objects.count() == 1
    assert client.post(reverse("webmail:sign_out")).status_code == 302
    assert open_inbox(client).status_code == 302
    assert client.get("/console/").status_code == 200


def test_a_password_change_elsewhere_ends_the_webmail_session(lab):
    client = signed_in_client(lab.helena)
    services.change_password(lab.helena, "Changed-Pass9")
    assert open_inbox(client).status_code == 302


# -- the inbox and its index ------------------------------------------------------------------------


def test_inbox_lists_newest_first_with_decoded_headers_attachment_mark_and_read_state(lab):
    first = store(lab.helena, text_message(subject="First"))
    message = text_message(subject="Ünïcödé <b>bold</b>", sender="Zoë <zoe@outside.test>")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="report.pdf")
    second = store(lab.helena, message)
    os.utime(lab.helena.maildir / "new" / first, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    client = signed_in_client(lab.helena)
    response = open_inbox(client)
    rows = inbox_rows(lab.helena)
    assert [row.uid for row in rows] == [second, first]
    assert rows[0].subject == "Ünïcödé <b>bold</b>" and rows[0].sender == "Zoë <zoe@outside.test>"
    assert rows[0].has_attachments and not rows[1].has_attachments
    content = response.content.decode()
    assert "Ünïcödé &lt;b&gt;bold&lt;/b&gt;" in content and "<b>bold</b>" not in content
    assert content.count('data-testid="attachment-mark"') == 1
    assert content.count('data-read="0"') == 2
    assert len(re.findall(r"<td[^>]*>\d{4}-\d\d-\d\d \d\d:\d\d</td>", content)) == 2


def test_the_index_is_refreshed_by_unique_name_and_skips_the_scan_when_nothing_changed(lab, monkeypatch):
    uids = [store(lab.helena, text_message(subject=f"m{n}")) for n in range(3)]
    assert index.refresh(lab.helena.pk, lab.helena.maildir, force=True).scanned
    parsed: list = []
    original = index.summarize
    monkeypatch.setattr(index, "summarize", lambda path: parsed.append(path) or original(path))
    # Directories just changed may change again in the same clock tick: a scan, but no re-parsing.
    index.refresh(lab.helena.pk, lab.helena.maildir)
    assert parsed == []
    state = index.MailboxIndexState.objects.get(mailbox=lab.helena)
    state.scanned_at_ns += 10 * index.SCAN_SETTLE_NS
    state.save()
    assert not index.refresh(lab.helena.pk, lab.helena.maildir).scanned
    mailstore.delete_messages(lab.helena.maildir, [uids[0]])
    newest = store(lab.helena, text_message(subject="new one"))
    assert index.refresh(lab.helena.pk, lab.helena.maildir).scanned
    assert [p.name for p in parsed] == [newest]
    assert {row.uid for row in inbox_rows(lab.helena)} == {newest, *uids[1:]}


def test_a_huge_unindexed_mailbox_is_indexed_newest_first_a_batch_per_refresh(lab):
    uids = [store(lab.helena, text_message(subject=f"m{n}")) for n in range(5)]
    first = index.refresh(lab.helena.pk, lab.helena.maildir, max_new=2)
    assert first.pending == 3
    assert {row.uid for row in inbox_rows(lab.helena)} == set(uids[-2:])
    state = index.MailboxIndexState.objects.get(mailbox=lab.helena)
    state.scanned_at_ns = 2**62  # even if the directories looked settled, the rest is still to come
    state.save()
    assert index.refresh(lab.helena.pk, lab.helena.maildir, max_new=2).pending == 1
    assert index.refresh(lab.helena.pk, lab.helena.maildir, max_new=2).pending == 0
    assert {row.uid for row in inbox_rows(lab.helena)} == set(uids)


def test_inbox_pages_and_searches_by_sender_and_subject(lab):
    rows = [
        MessageIndex(
            mailbox=lab.helena,
            uid=f"u{n}",
            file_name=f"new/u{n}",
            sender=f"s{n}@outside.test",
            subject=f"subject {n}",
            delivered_at="2026-01-01T00:00:00Z",
        )
        for n in range(120)
    ]
    MessageIndex.objects.bulk_create(rows)
    mark_index_fresh(lab.helena)
    client = signed_in_client(lab.helena)
    page = open_inbox(client, page=3).content.decode()
    assert page.count('data-testid="message-row"') == 20 and "Page 3 of 3" in page
    assert open_inbox(client, q="s7@").content.decode().count('data-testid="message-row"') == 1
    assert open_inbox(client, q="SUBJECT 11").content.decode().count('data-testid="message-row"') == 11


def test_a_page_of_a_large_inbox_costs_a_few_queries_and_no_directory_scan(
    lab, django_assert_max_num_queries, monkeypatch
):
    rows = [
        MessageIndex(
            mailbox=lab.helena,
            uid=f"u{n}",
            file_name=f"new/u{n}",
            sender="x@outside.test",
            subject=f"subject {n}",
            delivered_at="2026-01-01T00:00:00Z",
        )
        for n in range(50_000)
    ]
    MessageIndex.objects.bulk_create(rows, batch_size=5000)
    mark_index_fresh(lab.helena)
    client = signed_in_client(lab.helena)
    monkeypatch.setattr(index, "_names", lambda directory: pytest.fail("a page view scanned a directory"))
    with django_assert_max_num_queries(12):
        response = open_inbox(client, page=500)
    assert response.status_code == 200 and "Page 500 of 1000" in response.content.decode()


# -- reading ----------------------------------------------------------------------------------------


def test_reading_a_message_marks_it_seen_with_the_same_unique_name(lab):
    uid = store(lab.helena, text_message(subject="Read me", body="Line one <script>x</script>\n"))
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    response = client.get(reverse("webmail:read", args=[pk]))
    content = response.content.decode()
    assert "Line one &lt;script&gt;x&lt;/script&gt;" in content
    assert not (lab.helena.maildir / "new" / uid).exists()
    assert (lab.helena.maildir / "cur" / f"{uid}:2,S").exists()
    assert [m.uid for m in store_module.list_messages(lab.helena.maildir)] == [uid]
    client.post(reverse("webmail:mark", args=[pk]), {"seen": "0"})
    assert (lab.helena.maildir / "cur" / f"{uid}:2,").exists()
    assert not MessageIndex.objects.get(pk=pk).is_read


def test_header_fields_with_markup_are_escaped_on_every_page(lab):
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    message = text_message(subject=evil, sender=f'"{evil}" <carol@outside.test>')
    message["Cc"] = f'"{evil}" <dave@outside.test>'
    message.add_attachment(b"data", maintype="application", subtype="octet-stream", filename=f"{evil}.txt")
    uid = store(lab.helena, message)
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    pages = [
        open_inbox(client),
        client.get(reverse("webmail:read", args=[pk])),
        client.get(reverse("webmail:compose") + f"?reply_all={pk}"),
        client.get(reverse("webmail:compose") + f"?forward={pk}"),
    ]
    for response in pages:
        assert response.status_code == 200
        content = response.content.decode()
        assert "<script>alert" not in content and "<img src=x" not in content


def test_plain_text_is_shown_as_text_and_html_only_in_the_sandboxed_frame(lab):
    uid = store(lab.helena, html_message("<p>Rich <b>text</b></p>", text="Plain words"))
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    content = client.get(reverse("webmail:read", args=[pk])).content.decode()
    frame = re.search(r"<iframe[^>]*>", content).group(0)
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in frame
    assert "allow-scripts" not in frame and "allow-same-origin" not in frame
    assert f'src="/mail/m/{pk}/body/"' in frame and "Rich" not in content


def test_hostile_html_is_sanitized_and_served_under_a_sandboxing_csp(lab):
    uid = store(lab.helena, html_message(HOSTILE_HTML))
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    response = client.get(reverse("webmail:body", args=[pk]))
    body = response.content.decode().split("<body>", 1)[1]
    for fragment in HOSTILE_FRAGMENTS:
        assert fragment.lower() not in body.lower(), fragment
    assert "Hostile but harmless" in body and "color:red" in body.replace(" ", "")
    csp = response["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "allow-scripts" not in csp
    assert "img-src data: http://testserver/mail/inline/;" in csp and "https:" not in csp
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    read_page = client.get(reverse("webmail:read", args=[pk]))
    assert b'data-testid="images-blocked"' in read_page.content


def test_show_images_lets_remote_images_load_and_nothing_else(lab):
    uid = store(lab.helena, html_message('<img src="https://images.example/logo.png" alt="logo"><script>x</script>'))
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    hidden = client.get(reverse("webmail:body", args=[pk])).content.decode()
    shown = client.get(reverse("webmail:body", args=[pk]), {"images": "1"})
    assert "images.example" not in hidden
    assert 'src="https://images.example/logo.png"' in shown.content.decode() and "<script" not in shown.content.decode()
    assert "https:" in shown["Content-Security-Policy"] and "script-src" not in shown["Content-Security-Policy"]


def test_inline_cid_images_point_at_our_url_and_serve_only_raster_images(lab):
    message = html_message('<p>logo: <img src="cid:logo@x"> svg: <img src="cid:vector@x"></p>')
    html_part = message.get_body(preferencelist=("html",))
    html_part.add_related(b"\x89PNG\r\n\x1a\nfake", maintype="image", subtype="png", cid="<logo@x>")
    html_part.add_related(b"<svg onload='alert(1)'/>", maintype="image", subtype="svg+xml", cid="<vector@x>")
    uid = store(lab.helena, message)
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    body = client.get(reverse("webmail:body", args=[pk])).content.decode()
    urls = re.findall(r'src="(/mail/inline/[^"/]+/)"', body)
    assert len(urls) == 2
    png = client.get(urls[0])
    assert png.status_code == 200 and png["Content-Type"] == "image/png" and png["X-Content-Type-Options"] == "nosniff"
    assert client.get(urls[1]).status_code == 404
    # The URL is the permission (the sandboxed frame sends no cookie), for this part only, until the
    # password changes; a forged or altered one is nothing.
    assert Client().get(urls[0]).status_code == 200
    assert Client().get(urls[0].replace("/inline/", "/inline/x")).status_code == 404
    services.change_password(lab.helena, "Changed-Pass9")
    assert Client().get(urls[0]).status_code == 404


def test_attachments_download_as_attachments_with_a_safe_name_never_inline(lab):
    message = text_message()
    message.add_attachment(
        b"<html><script>alert(1)</script></html>",
        maintype="text",
        subtype="html",
        filename='../../etc/pa"ss\x07wd.html',
    )
    uid = store(lab.helena, message)
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    read_page = client.get(reverse("webmail:read", args=[pk])).content.decode()
    number = int(re.search(rf"/mail/m/{pk}/part/(\d+)/", read_page).group(1))
    response = client.get(reverse("webmail:attachment", args=[pk, number]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/octet-stream"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"].startswith("attachment;")
    assert "/" not in response["Content-Disposition"] and "\n" not in response["Content-Disposition"]
    assert 'filename="pa_sswd.html"' in response["Content-Disposition"]
    assert b"<script>" in response.content  # the bytes as sent, for the user's own program


def test_view_source_is_plain_text(lab):
    uid = store(lab.helena, html_message("<script>alert(1)</script>"))
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    response = client.get(reverse("webmail:source", args=[pk]))
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["X-Content-Type-Options"] == "nosniff" and "sandbox" in response["Content-Security-Policy"]
    assert b"Message-ID:" in response.content


# -- another mailbox's ids are 404 ------------------------------------------------------------------


def test_another_mailboxs_message_attachment_and_actions_are_404(lab):
    message = text_message(to="bob@webmail.test", subject="Bob's secret")
    message.add_attachment(b"secret", maintype="application", subtype="octet-stream", filename="secret.bin")
    uid = store(lab.bob, message)
    bob_pk = stored_pk(signed_in_client(lab.bob), lab.bob, uid)
    helena = signed_in_client(lab.helena)
    for name, args in [("read", [bob_pk]), ("body", [bob_pk]), ("source", [bob_pk]), ("attachment", [bob_pk, 2])]:
        assert helena.get(reverse(f"webmail:{name}", args=args)).status_code == 404, name
    for name in ("delete", "mark"):
        assert helena.post(reverse(f"webmail:{name}", args=[bob_pk]), {"seen": "1"}).status_code == 404, name
    for mode in ("reply", "reply_all", "forward"):
        assert helena.get(reverse("webmail:compose") + f"?{mode}={bob_pk}").status_code == 404
    assert helena.post(reverse("webmail:compose"), {"to": "x@outside.test", "forward_of": bob_pk}).status_code == 404
    assert (lab.bob.maildir / "new" / uid).exists()


def test_a_message_gone_from_disk_is_404_and_leaves_the_index(lab):
    uid = store(lab.helena, text_message())
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    mailstore.delete_messages(lab.helena.maildir, [uid])
    assert client.get(reverse("webmail:read", args=[pk])).status_code == 404
    assert not MessageIndex.objects.filter(pk=pk).exists()


# -- changes: CSRF, delete, the POP3 lock, password ------------------------------------------------


def test_every_change_needs_the_csrf_token(lab):
    uid = store(lab.helena, text_message())
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = client.cookies
    assert strict.post(reverse("webmail:sign_in"), {"address": "a@b.c", "password": "x"}).status_code == 403
    for name, args, data in [
        ("delete", [pk], {}),
        ("mark", [pk], {"seen": "1"}),
        ("sign_out", [], {}),
        ("compose", [], {"to": "bob@webmail.test", "body": "x"}),
        (
            "password",
            [],
            {"current_password": PASSWORD, "new_password": "Another-9x", "confirm_password": "Another-9x"},
        ),
    ]:
        assert strict.post(reverse(f"webmail:{name}", args=args), data).status_code == 403, name
    assert (lab.helena.maildir / "new" / uid).exists()


def test_delete_moves_to_trash_and_waits_while_a_pop3_session_holds_the_inbox(lab):
    uid = store(lab.helena, text_message())
    client = signed_in_client(lab.helena)
    pk = stored_pk(client, lab.helena, uid)
    lock = MailboxLock(lab.helena.maildir)
    assert lock.acquire()
    try:
        response = client.post(reverse("webmail:delete", args=[pk]), follow=True)
        assert b"The mailbox is busy" in response.content
        assert [m.uid for m in store_module.list_messages(lab.helena.maildir)] == [uid]
    finally:
        lock.release()
    client.post(reverse("webmail:delete", args=[pk]))
    assert store_module.list_messages(lab.helena.maildir) == []
    assert [m.uid for m in store_module.list_messages(lab.helena.maildir / ".Trash")] == [uid]
    assert MessageIndex.objects.get(pk=pk).folder == "Trash"


def test_the_password_policy_applies_and_a_change_keeps_this_session(lab):
    client = signed_in_client(lab.helena)
    weak = client.post(
        reverse("webmail:password"),
        {"current_password": PASSWORD, "new_password": "short", "confirm_password": "short"},
    )
    assert b"at least 8 characters" in weak.content
    wrong = client.post(
        reverse("webmail:password"),
        {"current_password": "Wrong1234x", "new_password": "Better-Pass9", "confirm_password": "Better-Pass9"},
    )
    assert b"not your current password" in wrong.content
    ok = client.post(
        reverse("webmail:password"),
        {"current_password": PASSWORD, "new_password": "Better-Pass9", "confirm_password": "Better-Pass9"},
    )
    assert ok.status_code == 302
    assert open_inbox(client).status_code == 200
    services.authenticate_mailbox("helena@webmail.test", "Better-Pass9")


def test_the_quota_bar_shows_the_share_used(lab):
    services.update_mailbox(lab.helena, quota_bytes=4000)
    store(lab.helena, text_message(body="x" * 1500))
    content = open_inbox(signed_in_client(lab.helena)).content.decode()
    assert re.search(r'data-testid="quota-bar">\d\d%', content)


def test_webmail_pages_allow_no_script_and_no_framing(lab, client):
    uid = store(lab.helena, text_message())
    signed_in = signed_in_client(lab.helena)
    pk = stored_pk(signed_in, lab.helena, uid)
    for response in (
        client.get(reverse("webmail:sign_in")),
        open_inbox(signed_in),
        signed_in.get(reverse("webmail:read", args=[pk])),
        signed_in.get(reverse("webmail:compose")),
    ):
        csp = response["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "frame-ancestors 'none'" in csp
        assert response["X-Frame-Options"] == "DENY"


def test_the_session_store_never_holds_the_password_in_clear(lab):
    from django.contrib.sessions.models import Session

    client = signed_in_client(lab.helena)
    assert client.cookies["webmail_key"]["httponly"] and client.cookies["webmail_key"]["path"] == "/mail/"
    stored = [str(row.get_decoded()) for row in Session.objects.all()]
    assert stored and not any(PASSWORD in data for data in stored)
    client.post(reverse("webmail:sign_out"))
    assert client.cookies["webmail_key"].value == ""


def test_session_cookie_is_httponly_and_samesite(lab, client):
    clear_login_throttle()
    response = client.post(reverse("webmail:sign_in"), {"address": "helena@webmail.test", "password": PASSWORD})
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"


def test_safe_file_names_have_no_path_or_control_characters():
    assert mime.safe_file_name("..\\..\\boot.ini", "x") == "boot.ini"
    assert mime.safe_file_name("a\x00b\u202ec.txt", "x") == "abc.txt"
    assert mime.safe_file_name("...", "fallback") == "fallback"


def test_a_message_without_headers_or_with_broken_mime_still_opens(lab):
    broken = b'Content-Type: multipart/mixed; boundary="nope"\r\nSubject: =?bogus?Q?x?=\r\n\r\nno parts here\r\n'
    uid = store(lab.helena, broken)
    bare = store(lab.helena, b"just a line\r\n")
    client = signed_in_client(lab.helena)
    for stored in (uid, bare):
        assert client.get(reverse("webmail:read", args=[stored_pk(client, lab.helena, stored)])).status_code == 200


def test_behind_a_tls_proxy_the_session_cookie_is_secure(lab, client, settings):
    import subprocess
    import sys

    from tests.conftest import REPO_DIR

    probe = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'mailconsole.settings'; django.setup(); "
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_PROXY_SSL_HEADER)"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MAILCONSOLE_BEHIND_TLS_PROXY": "true"},
    ).stdout
    assert output.strip() == "True True ('HTTP_X_FORWARDED_PROTO', 'https')"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SESSION_COOKIE_SECURE = True
    clear_login_throttle()
    response = client.post(
        reverse("webmail:sign_in"),
        {"address": "helena@webmail.test", "password": PASSWORD},
        HTTP_X_FORWARDED_PROTO="https",
    )
    assert response.cookies["sessionid"]["secure"] and response.cookies["sessionid"]["httponly"]
