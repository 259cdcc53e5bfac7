"""Issue an API token for a user and print its key once."""

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils.translation import gettext

from api.models import ApiToken
from servers.management.language import TranslatedCommand


class Command(TranslatedCommand):
    help = "Create an API token for USER and print its key (shown only this once)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("user", help="user name")
        parser.add_argument("--expires-in-days", type=int, default=None, help="days until the token expires")
        parser.add_argument("--name", default="", help="what the token is for")

    def handle(self, *args, user: str, expires_in_days: int | None, name: str, **options) -> None:
        user_model = get_user_model()
        try:
            owner = user_model.objects.get(**{user_model.USERNAME_FIELD: user})
        except user_model.DoesNotExist:
            raise CommandError(gettext("There is no user %(user)s.") % {"user": repr(user)}) from None
        if not owner.is_active:
            raise CommandError(gettext("User %(user)s is inactive; a token would not work.") % {"user": repr(user)})
        if expires_in_days is not None and expires_in_days < 1:
            raise CommandError(gettext("--expires-in-days must be at least 1."))
        if len(name) > 100:
            raise CommandError(gettext("--name is at most 100 characters long."))
        token, key = ApiToken.issue(owner, name=name, expires_in_days=expires_in_days)
        expiry = f"expires {token.expires_at:%Y-%m-%d %H:%M %Z}" if token.expires_at else "does not expire"
        self.stderr.write(f"Token for {owner.get_username()} ({expiry}); store it now, it is not shown again:")
        self.stdout.write(key)
