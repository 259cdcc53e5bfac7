"""`manage.py pop3svc`: the POP3 service of this node from the command line."""

from __future__ import annotations

from servers import services
from servers.management.mail_service_cli import MailServiceCommand
from servers.models import Pop3Service


class Command(MailServiceCommand):
    help = "Show, change, start, pause and stop this node's POP3 service."
    model = Pop3Service
    protocol = "POP3"
    implicit_tls_name = "POP3S"
    default_tls_port = 995
    starttls_verb = "STLS"
    default_port = 110
    create_service = services.create_pop3_service
    update_service = services.update_pop3_service
    set_state = services.set_pop3_state
