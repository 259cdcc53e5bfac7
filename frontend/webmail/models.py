"""The webmail's index of a mailbox's Maildir folders: one row per message, refreshed by unique name."""

from __future__ import annotations

from django.db import models

from servers.models import Mailbox

INBOX = "INBOX"
SENT = "Sent"
FOLDERS = (INBOX, SENT)


class MessageIndexQuerySet(models.QuerySet):
    def for_mailbox(self, mailbox_id: int, folder: str = INBOX) -> MessageIndexQuerySet:
        return self.filter(mailbox_id=mailbox_id, folder=folder)

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
    folder = models.CharField(max_length=20, default=INBOX)
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
    folder = models.CharField(max_length=20, default=INBOX)
    new_mtime_ns = models.BigIntegerField(default=0)
    cur_mtime_ns = models.BigIntegerField(default=0)
    scanned_at_ns = models.BigIntegerField(default=0)

    class Meta:
        app_label = "frontend"
        constraints = [models.UniqueConstraint(fields=["mailbox", "folder"], name="webmail_index_state_unique")]

    def __str__(self) -> str:
        return f"{self.mailbox_id}/{self.folder}"
