from django.core.management.base import BaseCommand

from servers.first_run import ADMIN_USERNAME, set_up


class Command(BaseCommand):
    help = (
        "First-run set-up: the administrator, the Default SMTP Virtual Server, the POP3 and IMAP services. "
        "Safe to repeat (`runstack` does it too, and shows the password in its banner)."
    )

    def handle(self, *args, **options) -> None:
        result = set_up()
        if result.admin_created:
            self.stdout.write("MailConsole is set up.")
            if result.admin_password:
                self.stdout.write(
                    self.style.WARNING(
                        f"  Administrator: {ADMIN_USERNAME} / {result.admin_password}"
                        "   (shown once; change it in the console)"
                    )
                )
            else:
                self.stdout.write(f"  Administrator: {ADMIN_USERNAME} / (the password in MAILCONSOLE_ADMIN_PASSWORD)")
        for line in result.created:
            self.stdout.write(f"  {line}")
