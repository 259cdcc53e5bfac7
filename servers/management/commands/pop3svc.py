"""`manage.py pop3svc`: the POP3 service of this node from the command line."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from servers import services
from servers.models import Pop3Service, ServiceState
from servers.services import RefusedError

ACTOR = "cli"


class Command(BaseCommand):
    help = "Show, change, start, pause and stop this node's POP3 service."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("status", help="address, TLS and state")
        create = sub.add_parser("create", help="give this node a POP3 service")
        create.add_argument("--ip", default=None)
        create.add_argument("--port", type=int, default=110)
        create.add_argument("--tls-port", type=int, default=None, help="implicit TLS (POP3S), e.g. 995")
        create.add_argument("--default-domain", default="")
        change = sub.add_parser("set", help="change settings")
        change.add_argument("--ip")
        change.add_argument("--port", type=int)
        change.add_argument("--tls-port", type=int, help="0 turns POP3S off")
        change.add_argument("--default-domain")
        change.add_argument("--require-tls", choices=["yes", "no"], help="refuse plaintext login before STLS")
        for verb in ("start", "pause", "stop"):
            sub.add_parser(verb, help=f"{verb} the POP3 service")

    def handle(self, *args, verb: str, **options) -> None:
        node = services.local_node()
        try:
            if verb == "create":
                service = services.create_pop3_service(
                    node=node,
                    ip_address=options["ip"],
                    port=options["port"],
                    tls_port=options["tls_port"],
                    default_domain=options["default_domain"],
                    actor=ACTOR,
                )
                self.stdout.write(f"Created the POP3 service on {service.ip_address}:{service.port}.")
                return
            service = Pop3Service.objects.filter(node=node).first()
            if service is None:
                raise CommandError(f"Node {node.name} has no POP3 service; create it with `pop3svc create`.")
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
                    raise CommandError("Nothing to change: give at least one option.")
                self.show(services.update_pop3_service(service, actor=ACTOR, **changes))
            else:
                desired = {"start": ServiceState.RUNNING, "pause": ServiceState.PAUSED, "stop": ServiceState.STOPPED}
                services.set_pop3_state(service, desired[verb], actor=ACTOR)
                self.stdout.write(f"POP3 service of node {node.name}: {desired[verb].value} requested")
        except RefusedError as exc:
            raise CommandError(exc.message) from None

    def show(self, service: Pop3Service) -> None:
        tls = f", POP3S on {service.tls_port}" if service.tls_port else ""
        self.stdout.write(f"POP3 service of node {service.node.name}: {service.ip_address}:{service.port}{tls}")
        self.stdout.write(f"  desired {service.desired_state}, state {service.state}, restarts {service.restart_count}")
        self.stdout.write(
            f"  default domain: {service.default_domain or '(the first server’s)'}; "
            f"plaintext login before STLS: {'refused' if service.plaintext_requires_tls else 'allowed'}"
        )
        if service.last_error:
            self.stdout.write(f"  last error: {service.last_error}")
