"""The webmail's index of a mailbox's Maildir folders: one row per message, refreshed by unique name."""

from __future__ import annotations

from django.db import models

from servers.models import Mailbox

INBOX = "INBOX"
SENT = "Sent"
DRAFTS = "Drafts"
TRASH = "Trash"
# A folder's IMAP name (modified UTF-7, "." between levels) is at most 255 octets (servers.mailfolders).
FOLDER_NAME_CHARS = 255


class MessageIndexQuerySet(models.QuerySet):
    def for_mailbox(self, mailbox_id: int, folder: str = INBOX) -> MessageIndexQuerySet:
        return self.filter(mailbox_id=mailbox_id, folder=folder)

    def in_folder_tree(self, mailbox_id: int, folder: str) -> MessageIndexQuerySet:
        """Rows of the folder and of every folder below it ("A" holds "A.B")."""
        return self.filter(mailbox_id=mailbox_id).filter(
            models.Q(folder=folder) | models.Q(folder__startswith=f"{folder}.")
        )

    def matching(self, text: str) -> MessageIndexQuerySet:
        """Messages whose sender, recipients or subject contain `text` (case-insensitive)."""
        text = text.strip()
        if not text:
            return self
        return self.filter(
            models.Q(sender__icontains=text) | models.Q(recipients__icontains=text) | models.Q(subject__icontains=text)
        )


class MessageIndex(models.Model):
    """What the message list shows of one stored message; the file itself stays the truth."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="+")
    folder = models.CharField(max_length=FOLDER_NAME_CHARS, default=INBOX)  # the IMAP name, as on disk
    uid = models.CharField(max_length=200)  # the Maildir unique name: the part before ':'
    file_name = models.CharField(max_length=255)  # "new/<uid>" or "cur/<uid>:2,S": where it was last seen
    sender = models.CharField(max_length=255, blank=True, default="")
    recipients = models.CharField(max_length=255, blank=True, default="")  # To:, what the Sent folder lists
    subject = models.CharField(max_length=255, blank=True, default="")
    sent_at = models.DateTimeField(null=True, blank=True)  # the Date: header
    delivered_at = models.DateTimeField()  # the file's mtime: the order of the list
    size_octets = models.PositiveBigIntegerField(default=0)
    has_attachments = models.BooleanField(default=False)
    is_read = models.BooleanField(default=False)
    is_flagged = models.BooleanField(default=False)  # the Maildir F flag: IMAP's \\Flagged, the star

    objects = MessageIndexQuerySet.as_manager()

    class Meta:
        app_label = "frontend"
        constraints = [
            models.UniqueConstraint(fields=["mailbox", "folder", "uid"], name="webmail_message_unique_uid"),
        ]
        indexes = [models.Index(fields=["mailbox", "folder", "-delivered_at", "-id"], name="webmail_newest_first")]

    def __str__(self) -> str:
        return f"{self.folder}/{self.uid}"


class MailboxIndexState(models.Model):
    """When a folder was last scanned, and the directory times it had: unchanged directories need no scan."""

    mailbox = models.ForeignKey(Mailbox, on_delete=models.CASCADE, related_name="+")
    folder = models.CharField(max_length=FOLDER_NAME_CHARS, default=INBOX)
    new_mtime_ns = models.BigIntegerField(default=0)
    cur_mtime_ns = models.BigIntegerField(default=0)
    scanned_at_ns = models.BigIntegerField(default=0)

    class Meta:
        app_label = "frontend"
        constraints = [models.UniqueConstraint(fields=["mailbox", "folder"], name="webmail_index_state_unique")]

    def __str__(self) -> str:
        return f"{self.mailbox_id}/{self.folder}"
