"""Compose, reply, reply-all and forward through the test client, with the SMTP hand-off recorded."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from frontend.webmail import views
from frontend.webmail.models import SENT, MessageIndex
from frontend.webmail.submission import SubmissionError, SubmissionResult, submit
from servers import maildir as store_module
from tests.factories import PASSWORD
from tests.webmail_helpers import make_lab, signed_in_client, store, text_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(fast_hashing):
    return make_lab()


@pytest.fixture
def outbox(monkeypatch) -> list:
    """Every submission as (mailbox address, password, message, recipients), accepted by a fake server."""
    sent: list = []

    def fake_submit(mailbox, password, message, recipients):
        sent.append((mailbox.address, password, message, recipients))
        return SubmissionResult()

    monkeypatch.setattr(views, "submit", fake_submit)
    return sent


def pk_of(client, mailbox, uid: str) -> int:
    client.get(reverse("webmail:folder", args=["inbox"]))
    return MessageIndex.objects.get(mailbox=mailbox, uid=uid).pk


def test_a_new_message_goes_to_every_recipient_with_bcc_hidden_and_a_copy_in_sent(lab, outbox):
    client = signed_in_client(lab.helena)
    response = client.post(
        reverse("webmail:compose"),
        {
            "to": "Bob <bob@webmail.test>",
            "cc": "carol@outside.test",
            "bcc": "dave@outside.test",
            "subject": "Plans",
            "body": "See attached.",
            "save_copy": "on",
            "attachments": [SimpleUploadedFile("plan.txt", b"step 1", content_type="text/plain")],
        },
    )
    assert response.status_code == 302
    (address, password, message, recipients) = outbox[0]
    assert (address, password) == ("helena@webmail.test", PASSWORD)
    assert recipients == ["bob@webmail.test", "carol@outside.test", "dave@outside.test"]
    assert message["Bcc"] is None and message["From"] == "helena@webmail.test"
    assert [part.get_filename() for part in message.iter_attachments()] == ["plan.txt"]
    sent_dir = lab.helena.maildir / ".Sent"
    assert len(store_module.list_messages(sent_dir)) == 1
    # POP3 lists the inbox only.
    assert store_module.list_messages(lab.helena.maildir) == []
    sent_page = client.get(reverse("webmail:folder", args=[SENT]), {"q": "bob@"}).content.decode()
    assert "Bob &lt;bob@webmail.test&gt;" in sent_page and "<th>To</th>" in sent_page
    assert MessageIndex.objects.get(mailbox=lab.helena, folder=SENT).subject == "Plans"


def test_reply_all_threads_and_leaves_out_the_user_and_forward_carries_the_attachments(lab, outbox):
    original = text_message(
        sender="Carol <carol@outside.test>", to="helena@webmail.test, bob@webmail.test", subject="Budget"
    )
    original["Cc"] = "Dave <dave@outside.test>"
    original.add_attachment(b"1,2,3", maintype="text", subtype="csv", filename="budget.csv")
    uid = store(lab.helena, original)
    client = signed_in_client(lab.helena)
    pk = pk_of(client, lab.helena, uid)

    form = client.get(reverse("webmail:compose"), {"reply_all": pk}).context["form"]
    assert form.initial["to"] == "Carol <carol@outside.test>"
    assert form.initial["cc"] == "bob@webmail.test, Dave <dave@outside.test>"
    assert form.initial["subject"] == "Re: Budget" and "> Hi there." in form.initial["body"]
    client.post(reverse("webmail:compose"), {**form.initial, "save_copy": ""})
    reply = outbox[-1][2]
    assert reply["In-Reply-To"] == original["Message-ID"] and original["Message-ID"] in reply["References"]
    assert store_module.list_messages(lab.helena.maildir / ".Sent") == []

    form = client.get(reverse("webmail:compose"), {"forward": pk}).context["form"]
    assert form.initial["subject"] == "Fwd: Budget"
    client.post(reverse("webmail:compose"), {**form.initial, "to": "erin@outside.test", "save_copy": ""})
    forwarded = outbox[-1][2]
    assert [(p.get_filename(), p.get_content()) for p in forwarded.iter_attachments()] == [("budget.csv", "1,2,3")]


def test_a_refusal_is_shown_and_nothing_is_kept(lab, monkeypatch):
    def refusing_submit(*args):
        raise SubmissionError("The mail server refused the message (552 5.2.2 Mailbox full).")

    monkeypatch.setattr(views, "submit", refusing_submit)
    client = signed_in_client(lab.helena)
    response = client.post(reverse("webmail:compose"), {"to": "bob@webmail.test", "subject": "x", "save_copy": "on"})
    assert response.status_code == 200 and b"552 5.2.2 Mailbox full" in response.content
    assert store_module.list_messages(lab.helena.maildir / ".Sent") == []


def test_without_the_browsers_key_the_user_is_asked_to_sign_in_again(lab, outbox):
    client = signed_in_client(lab.helena)
    del client.cookies["webmail_key"]
    response = client.post(reverse("webmail:compose"), {"to": "bob@webmail.test", "subject": "x"})
    assert b"sign in again" in response.content and outbox == []


def test_line_breaks_posted_in_the_subject_inject_no_header(lab, outbox):
    client = signed_in_client(lab.helena)
    client.post(reverse("webmail:compose"), {"to": "bob@webmail.test", "subject": "Hi\r\nBcc: eve@outside.test"})
    message = outbox[0][2]
    assert message["Subject"] == "Hi Bcc: eve@outside.test" and message["Bcc"] is None
    assert outbox[0][3] == ["bob@webmail.test"]


def test_a_message_needs_a_recipient_and_valid_addresses(lab, outbox):
    client = signed_in_client(lab.helena)
    assert b"at least one recipient" in client.post(reverse("webmail:compose"), {"subject": "x"}).content
    assert b"is not a mail address" in client.post(reverse("webmail:compose"), {"to": "not an address"}).content
    assert outbox == []


def test_a_stopped_server_is_reported_in_plain_words(lab):
    message = text_message(sender="helena@webmail.test", to="bob@webmail.test")
    with pytest.raises(SubmissionError, match="not answering; it may be stopped"):
        submit(lab.helena, PASSWORD, message, ["bob@webmail.test"])
