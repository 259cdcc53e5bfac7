from django.core.management.base import BaseCommand

from servers.workers.smtpd import run


class Command(BaseCommand):
    # Started by the supervisor with the slim worker settings (no admin, no URLconf to check); the
    # web and `manage.py check` run the system checks.
    requires_system_checks: list[str] = []
    help = "Run one virtual SMTP server in the foreground (started by the node's supervisor)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--server", type=int, required=True, help="id of the virtual server")
        parser.add_argument("--session-process", help="internal: started by the server's worker")

    def handle(self, *args, server: int, session_process: str | None, **options) -> None:
        raise SystemExit(run(server, session_process))
