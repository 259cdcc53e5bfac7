"""The first start of an installation: the administrator, the Default SMTP Virtual Server, the
Submission server for mail programs, and the node's POP3 and IMAP services. Safe to repeat: what
exists is left alone (`manage.py bootstrap`, and `manage.py runstack` before it starts anything, which
then shows the password in its banner)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from servers.models import ImapService, Pop3Service, VirtualServer
from servers.services import (
    create_imap_service,
    create_pop3_service,
    create_submission_server,
    create_virtual_server,
    local_node,
)
from servers.services.virtual_servers import default_home_dir

DEFAULT_SERVER_NAME = "Default SMTP Virtual Server"
SUBMISSION_SERVER_NAME = "Submission"
ADMIN_USERNAME = "admin"


@dataclass
class FirstRun:
    """What one call created: lines to print, and the administrator's password when it was made now
    and not given in MAILCONSOLE_ADMIN_PASSWORD (it is shown once and kept nowhere)."""

    created: list[str] = field(default_factory=list)
    admin_created: bool = False
    admin_password: str | None = None


def set_up() -> FirstRun:
    result = FirstRun()
    node = local_node()
    if not Pop3Service.objects.filter(node=node).exists():
        # Also for installations made before the POP3 service existed.
        create_pop3_service(
            node=node,
            ip_address=settings.DEFAULT_SMTP_HOST,
            port=settings.DEFAULT_POP3_PORT,
            default_domain=settings.DEFAULT_MAIL_DOMAIN,
            actor="bootstrap",
        )
        result.created.append(f"POP3 service: {settings.DEFAULT_SMTP_HOST}:{settings.DEFAULT_POP3_PORT}")
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
        result.created.append(f"IMAP service: {settings.DEFAULT_SMTP_HOST}:{settings.DEFAULT_IMAP_PORT}")
    user_model = get_user_model()
    if user_model.objects.filter(is_superuser=True).exists():
        _set_up_submission(result, node)
        return result
    given = os.environ.get("MAILCONSOLE_ADMIN_PASSWORD")
    password = given or secrets.token_urlsafe(12)
    with transaction.atomic():
        user_model.objects.create_superuser(ADMIN_USERNAME, "", password)
        create_virtual_server(
            name=DEFAULT_SERVER_NAME,
            ip_address=settings.DEFAULT_SMTP_HOST,
            port=settings.DEFAULT_SMTP_PORT,
            home_dir=default_home_dir("default"),
            default_domain=settings.DEFAULT_MAIL_DOMAIN,
            node=node,
            actor="bootstrap",
        )
    result.admin_created = True
    result.admin_password = None if given else password
    result.created.append(
        f"{DEFAULT_SERVER_NAME}: {settings.DEFAULT_SMTP_HOST}:{settings.DEFAULT_SMTP_PORT}, "
        f"domain {settings.DEFAULT_MAIL_DOMAIN}"
    )
    _set_up_submission(result, node)
    return result


def _set_up_submission(result: FirstRun, node) -> None:
    """The submission server for mail programs; also for installations made before it existed."""
    if VirtualServer.objects.filter(node=node, is_submission=True).exists():
        return
    if VirtualServer.objects.filter(node=node, name=SUBMISSION_SERVER_NAME).exists():
        return  # an administrator's own server of that name: leave it alone
    create_submission_server(
        name=SUBMISSION_SERVER_NAME,
        ip_address=settings.DEFAULT_SMTP_HOST,
        port=settings.DEFAULT_SUBMISSION_PORT,
        home_dir=default_home_dir("submission"),
        node=node,
        actor="bootstrap",
    )
    result.created.append(
        f"{SUBMISSION_SERVER_NAME} server: {settings.DEFAULT_SMTP_HOST}:{settings.DEFAULT_SUBMISSION_PORT}"
    )
