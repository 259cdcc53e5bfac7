"""The IMAP service driven by real clients, each started by the test against the real worker process.

curl, fetchmail, mbsync (isync), neomutt and Python's imaplib talk to `manage.py run_imapd` on loopback,
plain and over STARTTLS with the service's self-signed certificate; every result is then checked
through a second face: POP3 (poplib against `manage.py run_pop3d`), the Maildir++ store the IMAP
and webmail faces read (`servers.mailfolders.MaildirAccount`), or the webmail pages.

The workers run once for the module, without Celery; each test gets a fresh mailbox.
"""

from __future__ import annotations

import functools
import html
import imaplib
import os
import poplib
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from imapclient import IMAPClient

from servers import mailstore
from servers.mailfolders import MaildirAccount
from servers.models import ImapService, Mailbox, Pop3Service
from servers.services import mailboxes as mailbox_services
from tests.conftest import REPO_DIR
from tests.factories import PASSWORD, make_imap_service, make_mailbox, make_pop3_service, make_server
from tests.helpers import read_greeting, wait_until
from tests.webmail_helpers import signed_in_client

pytestmark = [
    # What is proven here is the wire protocol and the Maildirs; the database only holds the accounts.
    pytest.mark.backend_independent,
    pytest.mark.timeout(60),
]

DOMAIN = "clients.test"
# Every client gets this long: a hang fails the test quickly instead of stalling the suite.
CLIENT_TIMEOUT_S = 20
# RFC 2177 through our worker: a delivery reaches an IDLE session within a second.
IDLE_ANNOUNCE_S = 1.0
# Where the module's workers log, under var/log/.
WORKER_LOGS = ("imap-clients-imapd.log", "imap-clients-pop3d.log")


@dataclass
class Workers:
    """The module's IMAP and POP3 workers: real processes."""

    imap: ImapService
    pop3: Pop3Service
    processes: list[subprocess.Popen]

    @property
    def imap_port(self) -> int:
        return self.imap.port

    @property
    def certificate(self) -> Path:
        """The service's self-signed certificate: the clients are told to trust exactly this file."""
        return self.imap.cert_path


def isolated_redis_url(url: str) -> str:
    """The test Redis, another database number.

    A Celery stack left running by an earlier module reconciles this node every second; if it saw our
    hand-started workers' heartbeats it would adopt them and, the services being desired stopped,
    stop them. In a database of their own the supervisor never sees them.
    """
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/9"))


def start_worker(command: str, option: str, unit_id: int, env: dict[str, str], log_name: str) -> subprocess.Popen:
    log_dir = settings.VAR_DIR / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / log_name, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "manage.py", command, option, str(unit_id)],
            cwd=REPO_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(port: int, greeting: bytes, process: subprocess.Popen, log_name: str) -> bool:
    if process.poll() is not None:
        log_tail = (settings.VAR_DIR / "log" / log_name).read_text(errors="replace")[-3000:]
        raise AssertionError(f"the worker exited with {process.returncode}:\n{log_tail}")
    try:
        return read_greeting(port).startswith(greeting)
    except OSError:
        return False


@pytest.fixture(scope="module")
def workers(django_db_blocker, child_env) -> Iterator[Workers]:
    """The node's IMAP and POP3 services, their workers started here as processes (as the supervisor
    would start them) and kept for the module.

    Every test here takes a `mailbox`, and so the transactional database, which is emptied after each
    test (the service rows made here with it): the workers read their service row once, at start, and
    look each mailbox up at sign-in, so they serve the mailboxes every test makes afresh.
    """
    with django_db_blocker.unblock():
        imap = make_imap_service(default_domain=DOMAIN, start=False)
        pop3 = make_pop3_service(default_domain=DOMAIN, start=False)
    env = {**child_env, "REDIS_URL": isolated_redis_url(child_env["REDIS_URL"])}
    processes = [
        start_worker("run_imapd", "--service", imap.pk, env, WORKER_LOGS[0]),
        start_worker("run_pop3d", "--service", pop3.pk, env, WORKER_LOGS[1]),
    ]
    try:
        for port, greeting, process, log_name in zip(
            (imap.port, pop3.port), (b"* OK", b"+OK"), processes, WORKER_LOGS, strict=True
        ):
            ready = functools.partial(answers, port, greeting, process, log_name)
            wait_until(ready, timeout_s=20, message=f"the worker logging to {log_name} to answer")
    except BaseException:
        stop_processes(processes)
        with django_db_blocker.unblock():
            # No test will run to empty the database: leave no service rows to the next module.
            call_command("flush", interactive=False, verbosity=0)
        raise
    yield Workers(imap=imap, pop3=pop3, processes=processes)
    stop_processes(processes)


@pytest.fixture(autouse=True)
def no_server_errors(workers) -> Iterator[None]:
    """Whatever a client did, the workers logged no error and no traceback (bad input gets a NO or BAD)."""
    logs = [settings.VAR_DIR / "log" / name for name in WORKER_LOGS]
    offsets = [log.stat().st_size for log in logs]
    yield
    for log, offset in zip(logs, offsets, strict=True):
        with open(log, errors="replace") as text:
            text.seek(offset)
            problems = [line for line in text if " ERROR " in line or "Traceback" in line]
        assert problems == [], f"{log.name}:\n" + "".join(problems)


@pytest.fixture(scope="module")
def password_hash() -> str:
    """PASSWORD hashed once for the module with the configured hasher (Argon2), which the workers verify."""
    return make_password(PASSWORD)


@pytest.fixture
def mailbox(workers, password_hash, transactional_db, monkeypatch) -> Mailbox:
    """A fresh mailbox on a virtual server of its own (its SMTP worker stays stopped).

    Every mailbox gets the module's one hash of PASSWORD: an Argon2 hash costs most of a second on a
    busy machine, and the workers verify this real hash like any other.
    """
    monkeypatch.setattr(mailbox_services, "make_password", lambda raw: password_hash)
    return make_mailbox(make_server(domain=DOMAIN), "helena")


# -- helpers ------------------------------------------------------------------------------------------


def message_bytes(subject: str, *, to: str = f"someone@{DOMAIN}", body: str = "Hello.\n") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "Carol <carol@outside.test>", to, subject
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain="outside.test")
    message.set_content(body)
    return message.as_bytes().replace(b"\n", b"\r\n")


def deliver(mailbox: Mailbox, *subjects: str) -> None:
    """Put messages into the INBOX as the SMTP worker does (`servers.mailstore.deliver`)."""
    for subject in subjects:
        mailstore.deliver(mailbox.maildir, [message_bytes(subject, to=mailbox.address)])


def store_account(mailbox: Mailbox) -> MaildirAccount:
    """The mailbox as the IMAP and webmail faces see it on disk."""
    return MaildirAccount(mailbox.maildir, mailbox.address, quota_octets=None)


def folder_subjects(mailbox: Mailbox, folder: str) -> dict[str, frozenset[str]]:
    """Subject -> flags of every message in one folder, read from the store."""
    opened = store_account(mailbox).open_folder(folder, read_only=True)
    try:
        found = {}
        for record in opened.messages():
            header = message_from_bytes(opened.read_header(record.uid))
            found[str(header["Subject"])] = frozenset(record.flags)
        return found
    finally:
        opened.close()


def pop3_subjects(workers: Workers, mailbox: Mailbox) -> list[str]:
    """The INBOX as a POP3 client sees it."""
    client = poplib.POP3("127.0.0.1", workers.pop3.port, timeout=10)
    try:
        client.user(mailbox.address)
        client.pass_(PASSWORD)
        count, _ = client.stat()
        return [str(message_from_bytes(b"\r\n".join(client.retr(n)[1]))["Subject"]) for n in range(1, count + 1)]
    finally:
        client.quit()


@contextmanager
def imap_session(workers: Workers, mailbox: Mailbox) -> Iterator[imaplib.IMAP4]:
    """A signed-in imaplib client, logged out at the end; just closed if the test failed mid-response."""
    client = imaplib.IMAP4("127.0.0.1", workers.imap_port, timeout=10)
    try:
        client.login(mailbox.address, PASSWORD)
        yield client
    except BaseException:
        client.shutdown()
        raise
    client.logout()


@dataclass
class WebmailRow:
    pk: int
    flagged: bool


def webmail_rows(client: Client, slug: str) -> dict[str, WebmailRow]:
    """Subject -> row of every message on a folder's page in the webmail."""
    response = client.get(reverse("webmail:folder", args=[slug]))
    assert response.status_code == 200
    rows = {}
    for row in response.text.split('data-testid="message-row"')[1:]:
        subject = re.search(r'data-testid="message-link">([^<]*)</a>', row)
        pk = re.search(r'name="ids" value="(\d+)"', row)
        assert subject is not None and pk is not None
        flagged = 'data-flagged="1"' in row.split(">", 1)[0]
        rows[html.unescape(subject.group(1))] = WebmailRow(pk=int(pk.group(1)), flagged=flagged)
    return rows


def webmail_folder(client: Client, slug: str) -> dict[str, str]:
    """Subject -> "flagged" or "" for every message on a folder's page in the webmail."""
    return {subject: "flagged" if row.flagged else "" for subject, row in webmail_rows(client, slug).items()}


# -- two imaplib sessions ------------------------------------------------------------------------------


def test_two_sessions_on_one_mailbox_see_each_others_flags_expunges_and_moves(workers, mailbox):
    deliver(mailbox, "First", "Second", "Third")
    with imap_session(workers, mailbox) as writer, imap_session(workers, mailbox) as reader:
        assert writer.select("INBOX") == ("OK", [b"3"])
        assert reader.select("INBOX") == ("OK", [b"3"])

        writer.uid("STORE", "2", "+FLAGS", r"(\Flagged)")
        reader.noop()
        assert reader.untagged_responses.pop("FETCH", []) == [b"2 (UID 2 FLAGS (\\Flagged))"]

        writer.store("1", "+FLAGS", r"(\Deleted)")
        writer.expunge()
        reader.noop()
        assert reader.untagged_responses.pop("EXPUNGE", []) == [b"1"]
        status, fetched = reader.fetch("1:*", "(UID FLAGS)")
        assert (status, fetched) == ("OK", [b"1 (UID 2 FLAGS (\\Flagged))", b"2 (UID 3 FLAGS ())"])

        assert writer.uid("MOVE", "3", "Archive")[0] == "OK"
        reader.noop()
        assert reader.untagged_responses.pop("EXPUNGE", []) == [b"2"]
        assert reader.status("Archive", "(MESSAGES)") == ("OK", [b"Archive (MESSAGES 1)"])

    assert folder_subjects(mailbox, "INBOX") == {"Second": {"\\Flagged"}}
    assert folder_subjects(mailbox, "Archive") == {"Third": set()}
    assert pop3_subjects(workers, mailbox) == ["Second"]


def next_line_within(client: imaplib.IMAP4, seconds: float, waiting_for: str) -> tuple[bytes, float]:
    """The next line the server sends and how long it took, failing the test after `seconds`."""
    started = time.monotonic()
    client.sock.settimeout(seconds)
    try:
        line = client.readline()
    except TimeoutError:
        pytest.fail(f"no {waiting_for} within {seconds}s")
    client.sock.settimeout(10)
    return line, time.monotonic() - started


def test_an_idle_session_hears_of_a_delivery_and_of_a_pop3_deletion_within_a_second(workers, mailbox):
    deliver(mailbox, "Before")
    with imap_session(workers, mailbox) as client:
        client.select("INBOX")
        # imaplib has no IDLE before Python 3.14: the command goes out by hand, under imaplib's own tag.
        tag = client._new_tag().decode()
        client.send(f"{tag} IDLE\r\n".encode())
        assert client.readline().startswith(b"+ ")

        deliver(mailbox, "During IDLE")
        exists = next_line_within(client, IDLE_ANNOUNCE_S, "untagged EXISTS after the delivery")

        # POP3 is not locked out by the IMAP session; its DELE takes effect at QUIT, and the IDLE session
        # hears of it then.
        pop3 = poplib.POP3("127.0.0.1", workers.pop3.port, timeout=10)
        pop3.user(mailbox.address)
        pop3.pass_(PASSWORD)
        pop3.dele(1)
        pop3.quit()
        expunge = next_line_within(client, IDLE_ANNOUNCE_S, "untagged EXPUNGE after the POP3 QUIT")

        client.send(b"DONE\r\n")
        assert client.readline().startswith(f"{tag} OK".encode())

    assert exists[0] == b"* 2 EXISTS\r\n" and exists[1] < IDLE_ANNOUNCE_S
    assert expunge[0] == b"* 1 EXPUNGE\r\n" and expunge[1] < IDLE_ANNOUNCE_S
    assert folder_subjects(mailbox, "INBOX") == {"During IDLE": set()}
    assert pop3_subjects(workers, mailbox) == ["During IDLE"]


def test_imapclient_over_starttls_lists_special_use_folders_appends_searches_and_moves(workers, mailbox):
    deliver(mailbox, "Invoice 1", "Newsletter")
    context = ssl.create_default_context(cafile=str(workers.certificate))
    with IMAPClient("127.0.0.1", port=workers.imap_port, ssl=False, timeout=10) as client:
        client.starttls(context)
        client.login(mailbox.address, PASSWORD)
        special_use = {name: flags for flags, _, name in client.list_folders() if b"\\Trash" in flags}
        assert list(special_use) == ["Trash"]

        client.create_folder("Receipts")
        appended = client.append("Receipts", message_bytes("Receipt 7"), flags=[b"\\Seen"])
        assert b"APPENDUID" in appended
        client.select_folder("INBOX")
        invoices = client.search(["SUBJECT", "Invoice"])
        envelope = client.fetch(invoices, ["ENVELOPE"])[invoices[0]][b"ENVELOPE"]
        assert envelope.subject == b"Invoice 1"
        client.move(invoices, "Receipts")
        assert client.folder_status("Receipts", ["MESSAGES"])[b"MESSAGES"] == 2

    assert folder_subjects(mailbox, "Receipts") == {"Receipt 7": {"\\Seen"}, "Invoice 1": set()}
    assert pop3_subjects(workers, mailbox) == ["Newsletter"]


def folder_names(mailbox: Mailbox) -> set[str]:
    return {folder.name for folder in store_account(mailbox).list_folders()}


def run_client(argv: list[str], *, home: Path, **options) -> subprocess.CompletedProcess:
    """Run a client with its own HOME (no user configuration) and a timeout; fail with its output."""
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=CLIENT_TIMEOUT_S,
        env={**os.environ, "HOME": str(home)},
        **options,
    )
    assert result.returncode == 0, f"{argv[0]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


# -- curl ----------------------------------------------------------------------------------------------


def curl(url: str, mailbox: Mailbox, *options: str, home: Path) -> str:
    return run_client(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            str(CLIENT_TIMEOUT_S),
            "--user",
            f"{mailbox.address}:{PASSWORD}",
            *options,
            "--url",
            url,
        ],
        home=home,
    ).stdout


def test_curl_lists_fetches_manages_folders_moves_flags_and_deletes(workers, mailbox, tmp_path):
    deliver(mailbox, "First", "Second", "Third", "Fourth")
    plain = f"imap://127.0.0.1:{workers.imap_port}/"
    implicit_tls = f"imaps://127.0.0.1:{workers.imap.tls_port}/"
    # TLS verified against the service's own certificate (its names include 127.0.0.1); with imap://,
    # --ssl-reqd makes curl use STARTTLS or fail.
    verified = ("--cacert", str(workers.certificate))
    starttls = ("--ssl-reqd", *verified)

    def command(url: str, imap_command: str) -> str:
        # curl signs in, SELECTs the folder in the URL (if any), then sends the command as given.
        return curl(url, mailbox, "--request", imap_command, *starttls, home=tmp_path)

    listing = curl(plain, mailbox, home=tmp_path)
    first = curl(plain + "INBOX;UID=1", mailbox, *starttls, home=tmp_path)
    command(plain, "CREATE Projects")
    command(plain, "CREATE Drafts.Old")
    command(plain, "RENAME Drafts.Old Projects.Old")
    command(plain, "DELETE Projects.Old")
    flagged = command(plain + "INBOX", r"UID STORE 2 +FLAGS (\Flagged)")
    moved = command(plain + "INBOX", "UID MOVE 3 Projects")
    command(plain + "INBOX", r"UID STORE 4 +FLAGS (\Deleted)")
    expunged = command(plain + "INBOX", "UID EXPUNGE 4")
    listing_after = curl(implicit_tls, mailbox, *verified, home=tmp_path)
    # A 3 MB message up (APPEND with a literal far larger than one read) and back, over TLS both ways.
    big = tmp_path / "big.eml"
    big.write_bytes(b"Subject: Big\r\n\r\n" + b"".join(b"%07d %s\r\n" % (n, b"x" * 70) for n in range(40_000)))
    curl(plain + "Sent", mailbox, "--upload-file", str(big), *starttls, home=tmp_path)
    fetched_back = tmp_path / "fetched.eml"
    curl(implicit_tls + "Sent;UID=1", mailbox, "--output", str(fetched_back), *verified, home=tmp_path)

    assert '* LIST (\\HasNoChildren \\Sent) "." Sent' in listing.splitlines()
    assert "Projects" not in listing and '* LIST (\\HasNoChildren) "." Projects' in listing_after.splitlines()
    assert message_from_bytes(first.encode())["Subject"] == "First"
    assert flagged.strip() == "* 2 FETCH (UID 2 FLAGS (\\Flagged))"
    assert "* 3 EXPUNGE" in moved.splitlines() and "* 3 EXPUNGE" in expunged.splitlines()
    assert folder_names(mailbox) == {"INBOX", "Archive", "Drafts", "Junk", "Projects", "Sent", "Trash"}
    # curl fetched BODY[] (not BODY.PEEK[]), so the message it read is \Seen on disk too.
    assert folder_subjects(mailbox, "INBOX") == {"First": {"\\Seen"}, "Second": {"\\Flagged"}}
    assert folder_subjects(mailbox, "Projects") == {"Third": set()}
    assert fetched_back.read_bytes() == big.read_bytes()
    assert folder_subjects(mailbox, "Sent") == {"Big": {"\\Seen"}}


# -- fetchmail -----------------------------------------------------------------------------------------


def fetchmail(
    workers: Workers, mailbox: Mailbox, tmp_path: Path, *, keep: bool, starttls: bool, fetch_all: bool
) -> str:
    """Fetch INBOX (all of it, or what is not \\Seen) into an mbox through `--mda`; return the mbox so far."""
    delivered = tmp_path / "delivered.mbox"
    if starttls:
        # Verified against the service's certificate. fetchmail matches only DNS names, never the
        # certificate's IP address, so it is told which of the certificate's names to expect.
        tls = f'sslproto "tls1.2+" sslcertck sslcertfile "{workers.certificate}" sslcommonname "localhost"'
    else:
        tls = 'sslproto ""'
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll 127.0.0.1 service {workers.imap_port} protocol IMAP auth password\n"
        f'  user "{mailbox.address}" password "{PASSWORD}" is "{mailbox.local_part}" here\n'
        f"  {tls}\n"
        f"  {'keep' if keep else 'nokeep'} {'fetchall' if fetch_all else 'no fetchall'}\n"
        f'  mda "cat >> {delivered}"\n'
    )
    rc.chmod(0o600)
    run_client(["fetchmail", "-f", str(rc), "--nodetach", "--nosyslog", "--verbose"], home=tmp_path)
    return delivered.read_text()


def mbox_subjects(mbox_text: str) -> list[str]:
    return [line.removeprefix("Subject: ") for line in mbox_text.splitlines() if line.startswith("Subject: ")]


def test_fetchmail_fetches_new_mail_keeping_it_then_deletes_what_it_fetched(workers, mailbox, tmp_path):
    deliver(mailbox, "One", "Two", "Three")

    mbox = fetchmail(workers, mailbox, tmp_path, keep=True, starttls=True, fetch_all=False)
    assert mbox_subjects(mbox) == ["One", "Two", "Three"]
    assert folder_subjects(mailbox, "INBOX") == dict.fromkeys(["One", "Two", "Three"], {"\\Seen"})

    # Without fetchall, fetchmail asks for what is not \Seen: only the new message, deleted once fetched.
    deliver(mailbox, "Four")
    mbox = fetchmail(workers, mailbox, tmp_path, keep=False, starttls=False, fetch_all=False)
    assert mbox_subjects(mbox) == ["One", "Two", "Three", "Four"]
    assert pop3_subjects(workers, mailbox) == ["One", "Two", "Three"]

    mbox = fetchmail(workers, mailbox, tmp_path, keep=False, starttls=False, fetch_all=True)
    assert mbox_subjects(mbox) == ["One", "Two", "Three", "Four", "One", "Two", "Three"]
    assert pop3_subjects(workers, mailbox) == []
    assert folder_subjects(mailbox, "INBOX") == {}


# -- mbsync (isync) ------------------------------------------------------------------------------------


def mbsync(config: Path, home: Path) -> str:
    return run_client(["mbsync", "--config", str(config), "--verbose", "--all"], home=home).stdout


def local_message(folder: Path, subject: str) -> Path:
    """The file of the message with this subject in a local Maildir folder."""
    for path in [*(folder / "new").iterdir(), *(folder / "cur").iterdir()]:
        if f"Subject: {subject}\n" in path.read_text():
            return path
    raise AssertionError(f"no message {subject!r} in {folder}")


def local_flags(folder: Path) -> dict[str, str]:
    """Subject -> Maildir flag letters of every message in a local folder."""
    found = {}
    for path in [*(folder / "new").iterdir(), *(folder / "cur").iterdir()]:
        subject = message_from_bytes(path.read_bytes())["Subject"]
        found[str(subject)] = path.name.partition(":2,")[2]
    return found


def test_mbsync_mirrors_the_mailbox_and_brings_local_changes_back(workers, mailbox, tmp_path):
    deliver(mailbox, "Keep me", "Flag me", "File me", "Delete me")
    local = tmp_path / "Mail"
    local.mkdir()
    config = tmp_path / "mbsyncrc"
    config.write_text(
        f"IMAPAccount server\nHost 127.0.0.1\nPort {workers.imap_port}\n"
        f"User {mailbox.address}\nPass {PASSWORD}\n"
        # isync 1.4 spells it SSLType; the certificate file holds the one server certificate it trusts.
        f"SSLType STARTTLS\nCertificateFile {workers.certificate}\n\n"
        "IMAPStore remote\nAccount server\n\n"
        f"MaildirStore local\nPath {local}/\nInbox {local}/INBOX\nSubFolders Verbatim\n\n"
        "Channel everything\nFar :remote:\nNear :local:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n"
    )

    first_sync = mbsync(config, tmp_path)
    assert "Connection is now encrypted" in first_sync
    assert {p.name for p in local.iterdir()} == {"INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"}
    inbox = local / "INBOX"
    assert len(list((inbox / "new").iterdir())) == 4

    # A new folder, a message moved into it (a new file there, gone here), a flag, a deletion.
    receipts = local / "Receipts"
    for sub in ("cur", "new", "tmp"):
        (receipts / sub).mkdir(parents=True)
    filed = local_message(inbox, "File me")
    filed.rename(receipts / "cur" / "filed-locally:2,S")
    flagged = local_message(inbox, "Flag me")
    flagged.rename(inbox / "cur" / (flagged.name.split(":")[0] + ":2,F"))
    local_message(inbox, "Delete me").unlink()
    mbsync(config, tmp_path)

    assert "Receipts" in folder_names(mailbox)
    assert folder_subjects(mailbox, "Receipts") == {"File me": {"\\Seen"}}
    assert folder_subjects(mailbox, "INBOX") == {"Keep me": set(), "Flag me": {"\\Flagged"}}
    assert pop3_subjects(workers, mailbox) == ["Keep me", "Flag me"]

    # The other way round: a delivery, then the webmail creates a folder, moves the new message into it
    # and flags another; the next sync brings all of it to the local copy.
    deliver(mailbox, "Arrived later")
    webmail = signed_in_client(mailbox)
    assert webmail.post(reverse("webmail:create_folder"), {"name": "Travel", "parent": ""}).status_code == 302
    in_inbox = webmail_rows(webmail, "inbox")
    moved = {"action": "move", "ids": [in_inbox["Arrived later"].pk], "target": "Travel", "folder": "INBOX"}
    assert webmail.post(reverse("webmail:act"), moved).status_code == 302
    flagged = {"action": "flag", "ids": [in_inbox["Keep me"].pk], "folder": "INBOX"}
    assert webmail.post(reverse("webmail:act"), flagged).status_code == 302
    mbsync(config, tmp_path)
    assert local_flags(inbox) == {"Keep me": "F", "Flag me": "F"}
    assert local_flags(local / "Travel") == {"Arrived later": ""}
    assert local_flags(receipts) == {"File me": "S"}


# -- neomutt -------------------------------------------------------------------------------------------


def test_neomutt_files_flags_and_deletes_in_batch_and_pop3_and_webmail_agree(workers, mailbox, tmp_path):
    deliver(mailbox, "Invoice 1", "Invoice 2", "Urgent", "Spam offer", "Lunch plans")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f'set folder="imap://127.0.0.1:{workers.imap_port}/"\nset spoolfile="+INBOX"\n'
        f'set imap_user="{mailbox.address}"\nset imap_pass="{PASSWORD}"\n'
        # STARTTLS, required, verified against the service's certificate as the only trusted CA.
        f'set ssl_starttls=yes\nset ssl_force_tls=yes\nset ssl_ca_certificates_file="{workers.certificate}"\n'
        f'set certificate_file="{tmp_path}/accepted-certificates"\n'
        'set header_cache=""\nset message_cachedir=""\nset record=""\n'
        # Batch: no questions, no pauses, and no "Old" keyword added to unread mail on leaving.
        "set confirmcreate=no\nset confirmappend=no\nset delete=yes\nset quit=yes\nset move=no\n"
        "set mark_old=no\nset wait_key=no\nset sleep_time=0\nset imap_check_subscribed=no\n"
    )
    keys = (
        "<tag-pattern>~s Invoice<enter><tag-prefix><save-message>=Receipts<enter>"  # creates Receipts
        "<tag-pattern>~s Urgent<enter><tag-prefix><flag-message><untag-pattern>~A<enter>"
        "<delete-pattern>~s Spam<enter>"
        "<sync-mailbox><quit>"
    )
    command = f"neomutt -n -F {muttrc} -e \"push '{keys}'\""
    # neomutt needs a terminal: script(1) gives it a pseudo-terminal; TERM=dumb keeps the screen simple.
    subprocess.run(
        ["script", "--quiet", "--return", "--command", command, "/dev/null"],
        capture_output=True,
        timeout=CLIENT_TIMEOUT_S,
        env={**os.environ, "HOME": str(tmp_path), "TERM": "dumb"},
        check=True,
    )

    assert folder_subjects(mailbox, "Receipts") == {"Invoice 1": set(), "Invoice 2": set()}
    assert folder_subjects(mailbox, "INBOX") == {"Urgent": {"\\Flagged"}, "Lunch plans": set()}
    assert pop3_subjects(workers, mailbox) == ["Urgent", "Lunch plans"]
    webmail = signed_in_client(mailbox)
    assert webmail_folder(webmail, "inbox") == {"Urgent": "flagged", "Lunch plans": ""}
    assert webmail_folder(webmail, "Receipts") == {"Invoice 1": "", "Invoice 2": ""}
