from django.core.management.base import BaseCommand

from servers.workers.imapd import run


class Command(BaseCommand):
    # Started by the supervisor with the slim worker settings (no admin, no URLconf to check); the
    # web and `manage.py check` run the system checks.
    requires_system_checks: list[str] = []
    help = "Run the node's IMAP service in the foreground (started by the node's supervisor)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--service", type=int, required=True, help="id of the IMAP service")

    def handle(self, *args, service: int, **options) -> None:
        raise SystemExit(run(service))
