import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from servers.models import ImapService, Pop3Service
from servers.services import create_imap_service, create_pop3_service, create_virtual_server, local_node
from servers.services.virtual_servers import default_home_dir

DEFAULT_SERVER_NAME = "Default SMTP Virtual Server"


class Command(BaseCommand):
    help = (
        "First-run set-up: the administrator, the Default SMTP Virtual Server, the POP3 and IMAP services. "
        "Safe to repeat."
    )

    def handle(self, *args, **options) -> None:
        node = local_node()
        user_model = get_user_model()
        if not Pop3Service.objects.filter(node=node).exists():
            # Also for installations made before the POP3 service existed.
            create_pop3_service(
                node=node,
                ip_address=settings.DEFAULT_SMTP_HOST,
                port=settings.DEFAULT_POP3_PORT,
                default_domain=settings.DEFAULT_MAIL_DOMAIN,
                actor="bootstrap",
            )
            self.stdout.write(f"  POP3 service: {settings.DEFAULT_SMTP_HOST}:{settings.DEFAULT_POP3_PORT}")
        if not ImapService.objects.filter(node=node).exists():
            # Also for installations made before the IMAP service existed; STARTTLS with its own
            # self-signed certificate, made here like the POP3 service's.
            create_imap_service(
                node=node,
                ip_address=settings.DEFAULT_SMTP_HOST,
                port=settings.DEFAULT_IMAP_PORT,
                default_domain=settings.DEFAULT_MAIL_DOMAIN,
                actor="bootstrap",
            )
            self.stdout.write(f"  IMAP service: {settings.DEFAULT_SMTP_HOST}:{settings.DEFAULT_IMAP_PORT}")
        if user_model.objects.filter(is_superuser=True).exists():
            return
        with transaction.atomic():
            password = os.environ.get("MAILCONSOLE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user_model.objects.create_superuser("admin", "", password)
            create_virtual_server(
                name=DEFAULT_SERVER_NAME,
                ip_address=settings.DEFAULT_SMTP_HOST,
                port=settings.DEFAULT_SMTP_PORT,
                home_dir=default_home_dir("default"),
                default_domain=settings.DEFAULT_MAIL_DOMAIN,
                node=node,
                actor="bootstrap",
            )
        self.stdout.write("MailConsole is set up.")
        if "MAILCONSOLE_ADMIN_PASSWORD" not in os.environ:
            self.stdout.write(
                self.style.WARNING(f"  Administrator: admin / {password}   (shown once; change it in the console)")
            )
        else:
            self.stdout.write("  Administrator: admin / (the password in MAILCONSOLE_ADMIN_PASSWORD)")
        self.stdout.write(
            f"  {DEFAULT_SERVER_NAME}: {settings.DEFAULT_SMTP_HOST}:{settings.DEFAULT_SMTP_PORT}, "
            f"domain {settings.DEFAULT_MAIL_DOMAIN}"
        )
