"""The webmail on the IMAP folders, through Django's test client, cross-checked through the IMAP store.

What the webmail does is checked through `servers.mailfolders.MaildirAccount` (what an IMAP client
sees), and what is done through that store is checked in the webmail's pages.
"""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client
from django.urls import reverse

from frontend.webmail import views
from frontend.webmail.models import MessageIndex
from frontend.webmail.submission import SubmissionResult
from servers import maildir as store_module
from servers import services
from servers.mailfolders import MaildirAccount
from tests.webmail_helpers import make_lab, signed_in_client, store, text_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def lab(fast_hashing):
    return make_lab()


def imap(mailbox) -> MaildirAccount:
    """The mailbox as the IMAP service opens it."""
    return MaildirAccount(mailbox.maildir, mailbox.address, quota_octets=None)


def imap_messages(mailbox, folder: str) -> dict[str, frozenset[str]]:
    """Unique name -> IMAP flags of every message an IMAP client sees in `folder`."""
    opened = imap(mailbox).open_folder(folder, read_only=True)
    try:
        return {record.key: record.flags for record in opened.messages()}
    finally:
        opened.close()


def open_folder(client: Client, name: str, **params):
    return client.get(reverse("webmail:folder", args=[name]), params)


def pk_of(client: Client, mailbox, uid: str, folder: str = "inbox") -> int:
    open_folder(client, folder)
    return MessageIndex.objects.get(mailbox=mailbox, uid=uid).pk


def sidebar(content: str) -> list[str]:
    tree = content.split('data-testid="folder-tree"', 1)[1].split("</nav>", 1)[0]
    return [html.unescape(name) for name in re.findall(r'data-folder="([^"]*)"', tree)]


# -- the folder list --------------------------------------------------------------------------------


def test_the_sidebar_lists_inbox_special_folders_then_user_folders_nested_with_unread_counts(lab):
    account = imap(lab.helena)
    for name in ("Projects.2026", "Zebra", "&AMQ-rger", "Projects"):
        account.create_folder(name)
    account.append("Projects", text_message(subject="unread").as_bytes(), frozenset(), None)
    account.append("Projects", text_message(subject="read").as_bytes(), frozenset({"\\Seen"}), None)
    client = signed_in_client(lab.helena)
    content = open_folder(client, "inbox").content.decode()
    assert sidebar(content) == [
        "INBOX",
        "Sent",
        "Drafts",
        "Trash",
        "Junk",
        "Archive",
        "&AMQ-rger",
        "Projects",
        "Projects.2026",
        "Zebra",
    ]
    assert ">Ärger</span>" in content and "&amp;AMQ-rger</span>" not in content
    projects = re.search(r'data-folder="Projects" [^>]*>(.*?)</a>', content, re.S).group(1)
    assert 'data-testid="unread-count">1<' in projects
    nested = re.search(r'style="padding-left: (\d)rem"[^>]*data-folder="Projects.2026"', content)
    assert nested.group(1) == "2"


def test_a_folder_created_in_unicode_is_what_an_imap_client_lists_in_modified_utf7(lab):
    client = signed_in_client(lab.helena)
    response = client.post(reverse("webmail:create_folder"), {"name": "Ärger", "parent": ""})
    assert response.status_code == 302
    client.post(reverse("webmail:create_folder"), {"name": "Reisen 2026", "parent": "&AMQ-rger"})
    listed = {info.name: info for info in imap(lab.helena).list_folders()}
    assert "&AMQ-rger" in listed and "&AMQ-rger.Reisen 2026" in listed
    assert listed["&AMQ-rger"].subscribed and listed["&AMQ-rger"].has_children
    assert open_folder(client, "&AMQ-rger.Reisen 2026").status_code == 200
    # Characters that mean something in URLs and HTML stay plain text in either.
    for typed in ("50% off? #1 R&D", "<b>bold"):
        client.post(reverse("webmail:create_folder"), {"name": typed, "parent": ""})
    names = [info.name for info in imap(lab.helena).list_folders()]
    assert "50% off? #1 R&-D" in names and "<b>bold" in names
    page = open_folder(client, "50% off? #1 R&-D").content.decode()
    assert 'data-testid="folder-title">50% off? #1 R&amp;D<' in page
    assert "<b>bold" not in page and "&lt;b&gt;bold" in page


@pytest.mark.parametrize(
    "name",
    ["../../etc", "a/b", "back\\slash", ".hidden", "a..b", "trailing.", "nul\x00byte", "x" * 300, "INBOX", "Sent"],
)
def test_a_hostile_or_taken_folder_name_gets_a_field_error_and_nothing_is_made(lab, name):
    client = signed_in_client(lab.helena)
    before = sorted(p.name for p in lab.helena.maildir.parent.iterdir())
    response = client.post(reverse("webmail:create_folder"), {"name": name, "parent": ""})
    assert response.status_code == 400
    assert b'data-testid="folder-error"' in response.content
    assert sorted(p.name for p in lab.helena.maildir.parent.iterdir()) == before
    assert [info.name for info in imap(lab.helena).list_folders()] == [
        "INBOX",
        "Archive",
        "Drafts",
        "Junk",
        "Sent",
        "Trash",
    ]


def test_a_hostile_new_name_for_a_rename_gets_a_field_error(lab):
    imap(lab.helena).create_folder("Projects")
    client = signed_in_client(lab.helena)
    response = client.post(reverse("webmail:rename_folder"), {"folder": "Projects", "new_name": "../x"})
    assert response.status_code == 400 and b'data-testid="folder-error"' in response.content
    assert client.post(reverse("webmail:rename_folder"), {"folder": "../..", "new_name": "x"}).status_code == 404
    taken = client.post(reverse("webmail:rename_folder"), {"folder": "Projects", "new_name": "Archive"})
    assert taken.status_code == 400 and b"exists" in taken.content
    assert "Projects" in [info.name for info in imap(lab.helena).list_folders()]


def test_inbox_and_the_special_folders_can_be_neither_renamed_nor_deleted(lab):
    client = signed_in_client(lab.helena)
    for name in ("INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"):
        renamed = client.post(
            reverse("webmail:rename_folder"), {"folder": name, "new_name": f"Old {name}"}, follow=True
        )
        assert b"cannot be renamed" in renamed.content
        deleted = client.post(reverse("webmail:delete_folder"), {"folder": name, "confirm": "1"}, follow=True)
        assert b"cannot be deleted" in deleted.content
    names = [info.name for info in imap(lab.helena).list_folders()]
    assert names == ["INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"]


def test_a_rename_takes_the_subfolders_and_the_index_along(lab):
    account = imap(lab.helena)
    account.create_folder("Projects")
    account.create_folder("Projects.Old")
    account.append("Projects.Old", text_message(subject="archived").as_bytes(), frozenset(), None)
    client = signed_in_client(lab.helena)
    open_folder(client, "Projects.Old")
    row = MessageIndex.objects.get(mailbox=lab.helena, subject="archived")
    response = client.post(reverse("webmail:rename_folder"), {"folder": "Projects", "new_name": "Work"})
    assert response.status_code == 302
    names = [info.name for info in imap(lab.helena).list_folders()]
    assert "Work" in names and "Work.Old" in names and "Projects" not in names
    assert MessageIndex.objects.get(pk=row.pk).folder == "Work.Old"
    assert client.get(reverse("webmail:read", args=[row.pk])).status_code == 200
    assert open_folder(client, "Projects").status_code == 404


def test_a_folder_renamed_onto_its_own_parent_name_keeps_its_rows(lab):
    account = imap(lab.helena)
    account.create_folder("Top.Mid")  # "Top" exists only as the path to it
    account.append("Top.Mid", text_message(subject="deep").as_bytes(), frozenset(), None)
    client = signed_in_client(lab.helena)
    open_folder(client, "Top.Mid")
    client.post(reverse("webmail:rename_folder"), {"folder": "Top.Mid", "new_name": "Top"})
    assert list(imap_messages(lab.helena, "Top").values()) == [frozenset()]
    page = open_folder(client, "Top").content.decode()
    assert ">deep</a>" in page
    assert list(MessageIndex.objects.filter(mailbox=lab.helena).values_list("folder", flat=True)) == ["Top"]


def test_deleting_a_folder_with_messages_asks_first_then_deletes_it_and_its_index_rows(lab):
    account = imap(lab.helena)
    account.create_folder("Old")
    account.append("Old", text_message(subject="bye").as_bytes(), frozenset(), None)
    client = signed_in_client(lab.helena)
    open_folder(client, "Old")
    asked = client.post(reverse("webmail:delete_folder"), {"folder": "Old"})
    assert asked.status_code == 200 and b'data-testid="confirm"' in asked.content
    assert "Old" in [info.name for info in imap(lab.helena).list_folders()]
    client.post(reverse("webmail:delete_folder"), {"folder": "Old", "confirm": "1"})
    assert "Old" not in [info.name for info in imap(lab.helena).list_folders()]
    assert not MessageIndex.objects.filter(mailbox=lab.helena, folder="Old").exists()
    # An empty folder goes without a question.
    account.create_folder("Empty")
    client.post(reverse("webmail:delete_folder"), {"folder": "Empty"})
    assert "Empty" not in [info.name for info in imap(lab.helena).list_folders()]


# -- messages: move, copy, Trash, undo ----------------------------------------------------------------


def test_moving_selected_messages_keeps_their_unique_names_and_flags_for_imap_and_pop3(lab):
    imap(lab.helena).create_folder("Projects")
    first, second, stays = (store(lab.helena, text_message(subject=s)) for s in ("one", "two", "three"))
    client = signed_in_client(lab.helena)
    first_pk, second_pk = pk_of(client, lab.helena, first), pk_of(client, lab.helena, second)
    client.get(reverse("webmail:read", args=[first_pk]))  # read: \Seen
    response = client.post(
        reverse("webmail:act"), {"action": "move", "target": "Projects", "ids": [first_pk, second_pk]}
    )
    assert response.status_code == 302
    assert imap_messages(lab.helena, "Projects") == {first: frozenset({"\\Seen"}), second: frozenset()}
    assert [m.uid for m in store_module.list_messages(lab.helena.maildir)] == [stays]  # POP3's view
    page = open_folder(client, "Projects").content.decode()
    assert page.count('data-testid="message-row"') == 2
    assert {row.folder for row in MessageIndex.objects.filter(pk__in=[first_pk, second_pk])} == {"Projects"}
    assert client.get(reverse("webmail:read", args=[second_pk])).status_code == 200


def test_copying_a_message_leaves_it_and_gives_the_copy_a_new_unique_name(lab):
    imap(lab.helena).create_folder("Keep")
    uid = store(lab.helena, text_message(subject="keep a copy"))
    client = signed_in_client(lab.helena)
    pk = pk_of(client, lab.helena, uid)
    client.post(reverse("webmail:act"), {"action": "copy", "target": "Keep", "ids": [pk]})
    copies = imap_messages(lab.helena, "Keep")
    assert len(copies) == 1 and uid not in copies
    assert list(imap_messages(lab.helena, "INBOX")) == [uid]
    copy_row = MessageIndex.objects.get(mailbox=lab.helena, folder="Keep")
    assert copy_row.uid in copies and copy_row.subject == "keep a copy"
    assert client.get(reverse("webmail:read", args=[copy_row.pk])).status_code == 200


def test_a_copy_over_the_quota_is_refused_in_words_and_copies_nothing(lab):
    uid = store(lab.helena, text_message(body="x" * 3000))
    services.update_mailbox(lab.helena, quota_bytes=4000)
    client = signed_in_client(lab.helena)
    pk = pk_of(client, lab.helena, uid)
    response = client.post(reverse("webmail:act"), {"action": "copy", "target": "Archive", "ids": [pk]}, follow=True)
    assert response.status_code == 200 and b"Nothing was changed" in response.content
    assert imap_messages(lab.helena, "Archive") == {}
    # A move adds nothing to the mailbox, so the quota lets it through.
    client.post(reverse("webmail:act"), {"action": "move", "target": "Archive", "ids": [pk]})
    assert list(imap_messages(lab.helena, "Archive")) == [uid]


def test_delete_moves_to_trash_and_undo_right_after_moves_it_back(lab):
    uid = store(lab.helena, text_message(subject="oops"))
    client = signed_in_client(lab.helena)
    pk = pk_of(client, lab.helena, uid)
    page = client.post(reverse("webmail:delete", args=[pk]), follow=True).content.decode()
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    assert 'data-testid="undo"' not in open_folder(client, "inbox").content.decode()  # offered once
    assert list(imap_messages(lab.helena, "Trash")) == [uid]
    # Back with the same unique name (POP3's UIDL), though no IMAP session looked at INBOX meanwhile.
    client.post(reverse("webmail:undo"), {"token": token})
    assert list(imap_messages(lab.helena, "INBOX")) == [uid] and imap_messages(lab.helena, "Trash") == {}
    assert [m.uid for m in store_module.list_messages(lab.helena.maildir)] == [uid]
    assert MessageIndex.objects.get(pk=pk).folder == "INBOX"
    assert client.post(reverse("webmail:undo"), {"token": token + "x"}).status_code == 404


def test_in_trash_delete_for_ever_and_empty_trash_ask_first(lab):
    doomed, kept = store(lab.helena, text_message(subject="a")), store(lab.helena, text_message(subject="b"))
    client = signed_in_client(lab.helena)
    pks = [pk_of(client, lab.helena, doomed), pk_of(client, lab.helena, kept)]
    # Outside Trash nothing is deleted for ever: Delete is the move to Trash, which can be undone.
    assert client.post(reverse("webmail:act"), {"action": "forever", "ids": pks, "confirm": "1"}).status_code == 404
    client.post(reverse("webmail:act"), {"action": "trash", "ids": pks})
    assert set(imap_messages(lab.helena, "Trash")) == {doomed, kept}
    asked = client.post(reverse("webmail:act"), {"action": "forever", "ids": [pks[0]]})
    assert b'data-testid="confirm"' in asked.content and len(imap_messages(lab.helena, "Trash")) == 2
    client.post(reverse("webmail:act"), {"action": "forever", "ids": [pks[0]], "confirm": "1"})
    assert list(imap_messages(lab.helena, "Trash")) == [kept]
    asked = client.get(reverse("webmail:empty_trash"))
    assert b'data-testid="confirm"' in asked.content and list(imap_messages(lab.helena, "Trash")) == [kept]
    imap(lab.helena).append("Trash", text_message().as_bytes(), frozenset(), None)  # not indexed yet
    assert client.post(reverse("webmail:empty_trash"), {"confirm": "1"}).status_code == 302
    assert imap_messages(lab.helena, "Trash") == {}
    assert not MessageIndex.objects.filter(mailbox=lab.helena).exists()


def test_flagging_and_marking_unread_set_the_maildir_flags_imap_sees(lab):
    uid = store(lab.helena, text_message())
    client = signed_in_client(lab.helena)
    pk = pk_of(client, lab.helena, uid)
    client.post(reverse("webmail:mark", args=[pk]), {"flagged": "1"})
    assert imap_messages(lab.helena, "INBOX") == {uid: frozenset({"\\Flagged"})}
    client.get(reverse("webmail:read", args=[pk]))
    assert imap_messages(lab.helena, "INBOX") == {uid: frozenset({"\\Flagged", "\\Seen"})}
    client.post(reverse("webmail:act"), {"action": "unread", "ids": [pk]})
    client.post(reverse("webmail:mark", args=[pk]), {"flagged": "0"})
    assert imap_messages(lab.helena, "INBOX") == {uid: frozenset()}
    client.post(reverse("webmail:act"), {"action": "flag", "ids": [pk]})
    assert imap_messages(lab.helena, "INBOX") == {uid: frozenset({"\\Flagged"})}
    assert 'data-flagged="1"' in open_folder(client, "inbox").content.decode()


# -- what IMAP does shows in the webmail ------------------------------------------------------------


def test_folders_flags_and_moves_made_through_the_imap_store_show_in_the_webmail(lab):
    flagged, moved = store(lab.helena, text_message(subject="star me")), store(lab.helena, text_message(subject="go"))
    client = signed_in_client(lab.helena)
    open_folder(client, "inbox")
    account = imap(lab.helena)
    account.create_folder("From IMAP")
    inbox = account.open_folder("INBOX", read_only=False)
    uids = {record.key: record.uid for record in inbox.messages()}
    inbox.store_flags([uids[flagged]], frozenset({"\\Flagged", "\\Seen"}), "add")
    inbox.move_to([uids[moved]], "From IMAP")
    inbox.close()
    page = open_folder(client, "inbox").content.decode()
    assert "From IMAP" in sidebar(page)
    assert page.count('data-testid="message-row"') == 1
    assert 'data-flagged="1"' in page and 'data-read="1"' in page
    moved_page = open_folder(client, "From IMAP").content.decode()
    assert ">go</a>" in moved_page and 'data-read="0"' in moved_page
    assert MessageIndex.objects.get(mailbox=lab.helena, folder="From IMAP").uid == moved


def test_a_folder_renamed_or_deleted_through_the_imap_store_leaves_no_rows_behind(lab):
    account = imap(lab.helena)
    for name in ("Old", "Doomed"):
        account.create_folder(name)
        account.append(name, text_message(subject=f"in {name}").as_bytes(), frozenset(), None)
    client = signed_in_client(lab.helena)
    open_folder(client, "inbox")
    assert set(MessageIndex.objects.filter(mailbox=lab.helena).values_list("folder", flat=True)) == {"Old", "Doomed"}
    account.rename_folder("Old", "New")
    account.delete_folder("Doomed")
    page = open_folder(client, "inbox").content.decode()
    assert "New" in sidebar(page) and "Old" not in sidebar(page) and "Doomed" not in sidebar(page)
    assert list(MessageIndex.objects.filter(mailbox=lab.helena).values_list("folder", "subject")) == [("New", "in Old")]


# -- drafts -----------------------------------------------------------------------------------------


@pytest.fixture
def outbox(monkeypatch) -> list:
    """Every message handed to the (fake) server."""
    sent: list = []

    def fake_submit(mailbox, password, message, recipients) -> SubmissionResult:
        sent.append(message)
        return SubmissionResult()

    monkeypatch.setattr(views, "submit", fake_submit)
    return sent


def test_a_reply_saved_as_a_draft_keeps_its_threading_and_attachments_when_sent(lab, outbox):
    original = text_message(subject="Budget")
    original.add_attachment(b"1,2,3", maintype="text", subtype="csv", filename="budget.csv")
    client = signed_in_client(lab.helena)
    pk = pk_of(client, lab.helena, store(lab.helena, original))
    form = client.get(reverse("webmail:compose"), {"forward": pk}).context["form"]
    client.post(reverse("webmail:compose"), {**form.initial, "save_draft": "1"})
    reply = client.get(reverse("webmail:compose"), {"reply": pk}).context["form"]
    client.post(reverse("webmail:compose"), {**reply.initial, "save_draft": "1"})
    drafts = MessageIndex.objects.filter(mailbox=lab.helena, folder="Drafts")
    forwarded, replied = drafts.get(subject="Fwd: Budget"), drafts.get(subject="Re: Budget")
    for draft in (forwarded, replied):
        client.post(
            reverse("webmail:compose"),
            {"to": "bob@webmail.test", "subject": draft.subject, "draft": draft.pk, "save_copy": ""},
        )
    sent_forward, sent_reply = outbox
    assert [p.get_filename() for p in sent_forward.iter_attachments()] == ["budget.csv"]
    assert sent_reply["In-Reply-To"] == original["Message-ID"]
    assert imap_messages(lab.helena, "Drafts") == {}


def test_a_saved_draft_has_the_draft_flag_opens_for_editing_and_goes_once_sent(lab, outbox):
    client = signed_in_client(lab.helena)
    saved = client.post(reverse("webmail:compose"), {"subject": "Half done", "body": "To be", "save_draft": "1"})
    assert saved.status_code == 302 and "?draft=" in saved["Location"]
    drafts = imap_messages(lab.helena, "Drafts")
    assert list(drafts.values()) == [frozenset({"\\Draft", "\\Seen"})]
    row = MessageIndex.objects.get(mailbox=lab.helena, folder="Drafts")
    opened = client.get(reverse("webmail:read", args=[row.pk]))
    assert opened.status_code == 302 and opened["Location"].endswith(f"?draft={row.pk}")
    form = client.get(opened["Location"]).context["form"]
    assert form.initial["subject"] == "Half done" and form.initial["body"].strip() == "To be"
    # Saving again replaces the draft; sending removes it.
    client.post(
        reverse("webmail:compose"),
        {"to": "bob@webmail.test", "subject": "Done", "body": "Now", "draft": row.pk, "save_draft": "1"},
    )
    assert len(imap_messages(lab.helena, "Drafts")) == 1
    row = MessageIndex.objects.get(mailbox=lab.helena, folder="Drafts")
    assert row.subject == "Done"
    client.post(
        reverse("webmail:compose"), {"to": "bob@webmail.test", "subject": "Done", "body": "Now", "draft": row.pk}
    )
    assert outbox[-1]["Subject"] == "Done"
    assert imap_messages(lab.helena, "Drafts") == {}
    assert not MessageIndex.objects.filter(mailbox=lab.helena, folder="Drafts").exists()


# -- access -----------------------------------------------------------------------------------------


def test_another_mailboxs_messages_and_undo_and_unknown_folders_are_404(lab):
    bob_uid = store(lab.bob, text_message(to="bob@webmail.test"))
    bob = signed_in_client(lab.bob)
    bob_pk = pk_of(bob, lab.bob, bob_uid)
    bob_page = bob.post(reverse("webmail:delete", args=[bob_pk]), follow=True).content.decode()
    bob_token = re.search(r'name="token" value="([^"]+)"', bob_page).group(1)
    helena = signed_in_client(lab.helena)
    for action in ("move", "copy", "trash", "forever", "read"):
        response = helena.post(reverse("webmail:act"), {"action": action, "target": "Archive", "ids": [bob_pk]})
        assert response.status_code == 404, action
    assert helena.post(reverse("webmail:undo"), {"token": bob_token}).status_code == 404
    huge = "9" * 40
    assert (
        helena.post(reverse("webmail:act"), {"action": "move", "target": "Archive", "ids": [huge]}).status_code == 302
    )
    assert helena.get(reverse("webmail:compose"), {"draft": huge}).status_code == 404
    assert helena.post(reverse("webmail:act"), {"action": "move", "target": "../bob", "ids": []}).status_code == 302
    for name in ("Nope", "..", ".Trash", "Trash.."):
        assert open_folder(helena, name).status_code == 404, name
    assert list(imap_messages(lab.bob, "Trash")) == [bob_uid]


def test_every_folder_change_is_a_post_with_the_csrf_token(lab):
    imap(lab.helena).create_folder("Projects")
    client = signed_in_client(lab.helena)
    strict = Client(enforce_csrf_checks=True)
    strict.cookies = client.cookies
    for name, data in [
        ("create_folder", {"name": "New"}),
        ("rename_folder", {"folder": "Projects", "new_name": "Work"}),
        ("delete_folder", {"folder": "Projects", "confirm": "1"}),
        ("act", {"action": "trash", "ids": []}),
        ("undo", {"token": "x"}),
        ("empty_trash", {"confirm": "1"}),
    ]:
        assert strict.post(reverse(f"webmail:{name}"), data).status_code == 403, name
    for name in ("create_folder", "rename_folder", "delete_folder", "act", "undo"):
        assert client.get(reverse(f"webmail:{name}")).status_code == 405, name
    assert [info.name for info in imap(lab.helena).list_folders()][-1] == "Trash"
    assert "Projects" in [info.name for info in imap(lab.helena).list_folders()]
    page = client.get(reverse("webmail:folders")).content.decode()
    assert page.count("csrfmiddlewaretoken") >= page.count('<form method="post"')
