"""The webmail in a real browser (Debian's Chromium via Playwright) against live SMTP and POP3 workers."""

from __future__ import annotations

import os
import poplib
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.mailfolders import MaildirAccount
from servers.models import ObservedState
from tests.conftest import REPO_DIR
from tests.factories import PASSWORD, make_pop3_service
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, wait_for_state, wait_until
from tests.panel_helpers import clear_login_throttle
from tests.webmail_helpers import (
    HOSTILE_HTML,
    PNG_1X1,
    html_message,
    make_lab,
    store,
    text_message,
)

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = [
    # The pages' database work is tested on both backends by the view tests.
    pytest.mark.backend_independent,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
    pytest.mark.timeout(120),
]
DOMAIN = "webmail.test"
ARTIFACTS = REPO_DIR / "test-artifacts"


def shoot(page, name: str) -> None:
    """Keep a screenshot of a main screen for review (test-artifacts/ is not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"webmail-{name}.png"))


@pytest.fixture(scope="module")
def browser() -> Iterator:
    # Playwright's sync API runs an event loop in this thread; the ORM calls between browser steps are
    # ordinary blocking calls, which Django would otherwise refuse there.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


class Visit:
    """One browser context: its page and every URL it asked for."""

    def __init__(self, browser, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url, accept_downloads=True)
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.page_errors: list[str] = []
        self.context.on("request", lambda request: self.requested.append(request.url))
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def sign_in(self, address: str, password: str = PASSWORD) -> None:
        self.page.goto("/mail/")
        self.page.fill("input[name=address]", address)
        self.page.fill("input[name=password]", password)
        self.page.click('[data-testid="sign-in"]')
        self.page.wait_for_url("**/mail/folder/inbox/")

    def open_message(self, subject: str) -> None:
        self.page.goto("/mail/folder/inbox/")
        self.page.click(f'[data-testid="message-link"]:has-text("{subject}")')
        self.page.wait_for_selector('[data-testid="message-subject"]')


@pytest.fixture
def visits(browser, live_server):
    clear_login_throttle()
    opened: list[Visit] = []

    def visit() -> Visit:
        opened.append(Visit(browser, live_server.url))
        return opened[-1]

    yield visit
    for each in opened:
        each.context.close()
        assert each.page_errors == []


def rcpt_code(port: int, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("probe@outside.test")
        code, _ = client.rcpt(address)
        client.rset()
        return code


@pytest.fixture
def live_lab(supervised):
    """A running virtual server with mailboxes helena and bob, and the node's POP3 service."""
    lab = make_lab(start=True, domain=DOMAIN)
    wait_for_state(lab.server, ObservedState.RUNNING, timeout_s=30)
    wait_until(
        lambda: rcpt_code(lab.server.port, f"bob@{DOMAIN}") == 250,
        timeout_s=30,
        message="the SMTP worker to know the mailboxes",
    )
    lab.pop3 = wait_for_state(make_pop3_service(default_domain=DOMAIN), ObservedState.RUNNING, timeout_s=30)
    return lab


def send(port: int, message) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.send_message(message)


def test_hostile_html_sent_through_smtp_runs_nothing_and_loads_nothing(visits, live_lab):
    send(live_lab.server.port, text_message(subject="Plain hello", body="Hello <b>helena</b>\n"))
    send(live_lab.server.port, html_message(HOSTILE_HTML, subject="Hostile newsletter", text=None))
    visit = visits()
    visit.sign_in(f"helena@{DOMAIN}")
    shoot(visit.page, "01-inbox")
    visit.open_message("Plain hello")
    assert "Hello <b>helena</b>" in visit.page.inner_text('[data-testid="message-text"]')

    visit.open_message("Hostile newsletter")
    page = visit.page
    frame_element = page.wait_for_selector('[data-testid="message-frame"]')
    frame = frame_element.content_frame()
    frame.wait_for_selector("text=Hostile but harmless")
    page.wait_for_timeout(1500)  # longer than the meta refresh and any onload would take
    # A click on what was a javascript: link goes nowhere either.
    frame.click("text=click me", timeout=2000)
    page.wait_for_timeout(300)
    assert page.evaluate("window.pwned") is None
    assert frame.evaluate("window.pwned") is None
    assert frame.url.endswith("/body/") and page.url.endswith(f"/mail/m/{frame.url.split('/')[-3]}/")
    assert [url for url in visit.requested if "evil.invalid" in url] == []
    assert page.is_visible('[data-testid="images-blocked"]')
    shoot(page, "02-hostile-message")
    assert "Hostile but harmless" in frame.evaluate("document.body.innerText")

    # The control: the same payload, unsanitized and unsandboxed, does set the flag this test looks for.
    raw = visit.context.browser.new_page()
    raw.set_content(HOSTILE_HTML.replace('http-equiv="refresh"', 'name="x"'))
    assert raw.evaluate("window.pwned") is not None
    raw.close()


def test_compose_with_an_attachment_to_another_mailbox_and_read_it_there(visits, live_lab):
    helena = visits()
    helena.sign_in(f"helena@{DOMAIN}")
    page = helena.page
    page.click('[data-testid="compose"]')
    page.fill("#id_to", f"Bob <bob@{DOMAIN}>")
    page.fill("#id_subject", "Report attached")
    page.fill("#id_body", "Here it is.")
    page.set_input_files(
        "#id_attachments", files=[{"name": "report.csv", "mimeType": "text/csv", "buffer": b"a,b\n1,2\n"}]
    )
    shoot(page, "03-compose")
    page.click('[data-testid="send"]')
    page.wait_for_url("**/mail/folder/inbox/")
    assert "sent" in page.inner_text('[data-testid="flash"]')
    page.click('[data-testid="folder-sent"]')
    page.wait_for_url("**/mail/folder/Sent/")
    page.wait_for_selector('[data-testid="message-link"]:has-text("Report attached")')

    bob = visits()
    bob.sign_in(f"bob@{DOMAIN}")
    bob.open_message("Report attached")
    assert f"helena@{DOMAIN}" in bob.page.inner_text('[data-testid="header-from"]')
    assert "Here it is." in bob.page.inner_text('[data-testid="message-text"]')
    shoot(bob.page, "04-message-with-attachment")
    with bob.page.expect_download() as download_info:
        bob.page.click('[data-testid="attachment"]:has-text("report.csv")')
    download = download_info.value
    assert download.suggested_filename == "report.csv"
    assert Path(download.path()).read_bytes() == b"a,b\n1,2\n"

    # A reply goes back through SMTP with the threading headers.
    bob.page.click('[data-testid="reply"]')
    assert bob.page.input_value("#id_subject") == "Re: Report attached"
    bob.page.click('[data-testid="send"]')
    bob.page.wait_for_url("**/mail/folder/inbox/")
    helena.open_message("Re: Report attached")

    # What the server refuses is said in plain words, with its reply.
    page.click('[data-testid="compose"]')
    page.fill("#id_to", "nobody@" + DOMAIN)
    page.click('[data-testid="send"]')
    error = page.inner_text('[data-testid="compose-error"]')
    assert "every recipient was refused" in error and "550" in error


def test_delete_waits_for_a_pop3_session_and_then_pop3_no_longer_lists_the_message(visits, live_lab):
    send(live_lab.server.port, text_message(subject="Delete me"))
    send(live_lab.server.port, text_message(subject="Keep me"))
    visit = visits()
    visit.sign_in(f"helena@{DOMAIN}")
    visit.open_message("Delete me")

    pop = poplib.POP3("127.0.0.1", live_lab.pop3.port, timeout=10)
    pop.user(f"helena@{DOMAIN}")
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == 2
    uidls_before = pop.uidl()[1]
    visit.page.click('[data-testid="delete"]')
    visit.page.wait_for_selector('[data-testid="flash"]:has-text("busy")')
    pop.quit()

    visit.page.click('[data-testid="delete"]')
    visit.page.wait_for_url("**/mail/folder/inbox/")
    assert visit.page.locator('[data-testid="message-row"]').count() == 1
    pop = poplib.POP3("127.0.0.1", live_lab.pop3.port, timeout=10)
    pop.user(f"helena@{DOMAIN}")
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == 1
    # Reading in the webmail renamed files into cur/ with flags; the UIDs POP3 shows stayed the same.
    assert {line.split()[1] for line in pop.uidl()[1]} < {line.split()[1] for line in uidls_before}
    pop.quit()


def test_inline_images_show_in_the_frame_and_remote_ones_only_after_show_images(visits, live_server, transactional_db):
    lab = make_lab(domain=DOMAIN)
    remote = live_server.url.replace("localhost", "127.0.0.1") + "/healthz?tracker"
    message = html_message(f'<p>Logo <img src="cid:logo@x" alt="logo"> tracker <img src="{remote}" alt="t"></p>')
    message.get_body(preferencelist=("html",)).add_related(PNG_1X1, maintype="image", subtype="png", cid="<logo@x>")
    store(lab.helena, message)
    visit = visits()
    visit.sign_in(f"helena@{DOMAIN}")
    visit.open_message("Newsletter")
    frame = visit.page.wait_for_selector('[data-testid="message-frame"]').content_frame()
    frame.wait_for_selector("img[alt=logo]")
    wait_until(
        lambda: frame.evaluate("document.querySelector('img[alt=logo]').naturalWidth") == 1,
        timeout_s=10,
        message="the inline image to load",
    )
    assert [url for url in visit.requested if "tracker" in url] == []

    visit.page.click('[data-testid="show-images"]')
    frame = visit.page.wait_for_selector('[data-testid="message-frame"]').content_frame()
    frame.wait_for_selector("img[alt=t]")
    wait_until(
        lambda: [url for url in visit.requested if "tracker" in url],
        timeout_s=10,
        message="the remote image to be fetched",
    )


def test_create_a_folder_move_a_message_into_it_delete_one_to_trash_and_undo(visits, live_server, transactional_db):
    lab = make_lab(domain=DOMAIN)
    moving = store(lab.helena, text_message(subject="Move me"))
    deleting = store(lab.helena, text_message(subject="Delete me"))
    visit = visits()
    visit.sign_in(f"helena@{DOMAIN}")
    page = visit.page
    page.click('[data-testid="manage-folders"]')
    page.fill("#id_name", "Ärger")
    page.click('[data-testid="create-folder"]')
    new_folder = page.locator('[data-testid="folder-tree"] [data-folder="&AMQ-rger"]')
    new_folder.wait_for()
    assert new_folder.inner_text().strip() == "Ärger"
    shoot(page, "05-manage-folders")

    visit.open_message("Move me")
    page.select_option('[data-testid="target-folder"]', "&AMQ-rger")
    page.click('[data-testid="move"]')
    page.wait_for_url("**/mail/folder/inbox/")
    new_folder.click()
    page.wait_for_selector('[data-testid="message-link"]:has-text("Move me")')
    shoot(page, "06-folder")

    visit.open_message("Delete me")
    page.click('[data-testid="delete"]')
    page.wait_for_url("**/mail/folder/inbox/")
    assert page.locator('[data-testid="message-row"]').count() == 0
    shoot(page, "07-deleted-with-undo")
    page.click('[data-testid="undo"]')
    page.wait_for_selector('[data-testid="message-link"]:has-text("Delete me")')

    # What an IMAP client sees: the new folder with the moved message, the undone one back in INBOX.
    account = MaildirAccount(lab.helena.maildir, lab.helena.address, quota_octets=None)
    for name, expected in (("&AMQ-rger", [moving]), ("INBOX", [deleting]), ("Trash", [])):
        opened = account.open_folder(name, read_only=True)
        assert [record.key for record in opened.messages()] == expected, name
        opened.close()
