"""Models of the frontend app: only the webmail's message index (the console keeps none)."""

from frontend.webmail.models import MailboxIndexState, MessageIndex

__all__ = ["MailboxIndexState", "MessageIndex"]
