"""What `pop3svc` and `imapsvc` share: show, change, start, pause and stop a node's mail-reading service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext

from servers import services
from servers.management.language import TranslatedCommand
from servers.models import ImapService, Pop3Service, ServiceState
from servers.services import RefusedError

ACTOR = "cli"
DESIRED = {"start": ServiceState.RUNNING, "pause": ServiceState.PAUSED, "stop": ServiceState.STOPPED}


class MailServiceCommand(TranslatedCommand):
    """Subclasses name the model, the words of the protocol and the service functions."""

    model: type[Pop3Service] | type[ImapService]
    protocol = ""  # "POP3"
    implicit_tls_name = ""  # "POP3S"
    default_tls_port = 0  # shown in the help: 995
    starttls_verb = ""  # "STLS"
    default_port = 0
    create_service: Callable[..., Any]
    update_service: Callable[..., Any]
    set_state: Callable[..., Any]

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("status", help="address, TLS and state")
        create = sub.add_parser("create", help=f"give this node a {self.protocol} service")
        create.add_argument("--ip", default=None)
        create.add_argument("--port", type=int, default=self.default_port)
        create.add_argument(
            "--tls-port",
            type=int,
            default=None,
            help=f"implicit TLS ({self.implicit_tls_name}), e.g. {self.default_tls_port}",
        )
        create.add_argument("--default-domain", default="")
        change = sub.add_parser("set", help="change settings")
        change.add_argument("--ip")
        change.add_argument("--port", type=int)
        change.add_argument("--tls-port", type=int, help=f"0 turns {self.implicit_tls_name} off")
        change.add_argument("--default-domain")
        change.add_argument(
            "--require-tls", choices=["yes", "no"], help=f"refuse plaintext login before {self.starttls_verb}"
        )
        for verb in DESIRED:
            sub.add_parser(verb, help=f"{verb} the {self.protocol} service")

    def handle(self, *args, verb: str, **options) -> None:
        node = services.local_node()
        # Called through the class: these are plain functions, not methods of the command.
        command = type(self)
        try:
            if verb == "create":
                service = command.create_service(
                    node=node,
                    ip_address=options["ip"],
                    port=options["port"],
                    tls_port=options["tls_port"],
                    default_domain=options["default_domain"],
                    actor=ACTOR,
                )
                self.stdout.write(f"Created the {self.protocol} service on {service.ip_address}:{service.port}.")
                return
            service = self.model.objects.filter(node=node).first()
            if service is None:
                command_name = f"{self.protocol.lower()}svc"
                raise CommandError(
                    gettext("Node %(node)s has no %(protocol)s service; create it with `%(command)s create`.")
                    % {"node": node.name, "protocol": self.protocol, "command": command_name}
                )
            if verb == "status":
                self.show(service)
            elif verb == "set":
                changes = {
                    "ip_address": options["ip"],
                    "port": options["port"],
                    "tls_port": options["tls_port"],
                    "default_domain": options["default_domain"],
                }
                changes = {key: value for key, value in changes.items() if value is not None}
                if options["require_tls"]:
                    changes["plaintext_requires_tls"] = options["require_tls"] == "yes"
                if not changes:
                    raise CommandError(gettext("Nothing to change: give at least one option."))
                self.show(command.update_service(service, actor=ACTOR, **changes))
            else:
                command.set_state(service, DESIRED[verb], actor=ACTOR)
                self.stdout.write(f"{self.protocol} service of node {node.name}: {DESIRED[verb].value} requested")
        except RefusedError as exc:
            where = f"{exc.field.replace('_', '-')}: " if exc.field else ""
            raise CommandError(where + exc.message) from None  # an option name, then the refusal

    def show(self, service: Pop3Service | ImapService) -> None:
        tls = f", {self.implicit_tls_name} on {service.tls_port}" if service.tls_port else ""
        self.stdout.write(
            f"{self.protocol} service of node {service.node.name}: {service.ip_address}:{service.port}{tls}"
        )
        self.stdout.write(f"  desired {service.desired_state}, state {service.state}, restarts {service.restart_count}")
        self.stdout.write(
            f"  default domain: {service.default_domain or '(the first server’s)'}; "
            f"plaintext login before {self.starttls_verb}: "
            f"{'refused' if service.plaintext_requires_tls else 'allowed'}"
        )
        if service.last_error:
            self.stdout.write(f"  last error: {service.last_error}")
