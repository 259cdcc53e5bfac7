"""Models of the frontend app: the webmail's message index and the saved interface languages."""

from frontend.language import LanguagePreference
from frontend.webmail.models import MailboxIndexState, MessageIndex

__all__ = ["LanguagePreference", "MailboxIndexState", "MessageIndex"]
