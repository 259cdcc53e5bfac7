"""`manage.py imapsvc`: the IMAP service of this node from the command line."""

from __future__ import annotations

from servers import services
from servers.management.mail_service_cli import MailServiceCommand
from servers.models import ImapService


class Command(MailServiceCommand):
    help = "Show, change, start, pause and stop this node's IMAP service."
    model = ImapService
    protocol = "IMAP"
    implicit_tls_name = "IMAPS"
    default_tls_port = 993
    starttls_verb = "STARTTLS"
    default_port = 143
    create_service = services.create_imap_service
    update_service = services.update_imap_service
    set_state = services.set_imap_state
