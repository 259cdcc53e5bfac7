"""`smtpqueue`: a server's outbound queue (list, retry, delete, freeze) and its Delivery tab."""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext

from mailconsole.words import parse_bool
from servers import services
from servers.delivery import services as delivery
from servers.delivery.models import QueuedMessage
from servers.management.commands.smtpsvc import find_domain, find_server
from servers.management.language import TranslatedCommand
from servers.services import RefusedError

ACTOR = "cli"


class Command(TranslatedCommand):
    help = "Show and act on a virtual server's outbound queue; show and change its Delivery tab."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        show = sub.add_parser("list", help="queued messages: sender, recipients and states, next retry")
        show.add_argument("server")
        for verb, text in [
            ("retry", "try a message now"),
            ("freeze", "hold a message"),
            ("unfreeze", "release a held message"),
            ("delete", "remove a message"),
        ]:
            action = sub.add_parser(verb, help=text)
            action.add_argument("server")
            action.add_argument("message", help="the id from `smtpqueue list`, or the Queue file name")
            if verb == "delete":
                action.add_argument("--ndr", action="store_true", help="tell the sender (a non-delivery report)")
        tab = sub.add_parser("delivery", help="show the Delivery tab, or change it with NAME=VALUE ...")
        tab.add_argument("server")
        # Not "settings": Django's own --settings option would read it as a settings module.
        tab.add_argument("assignments", nargs="*", metavar="NAME=VALUE")
        route = sub.add_parser("route", help="send a remote domain's mail through a smart host ('' removes)")
        route.add_argument("server")
        route.add_argument("domain")
        route.add_argument("smart_host")
        route.add_argument("--port", type=int, default=25)
        route.add_argument("--user", default="")
        route.add_argument("--password", default=None, help="omit to keep the stored one; '' removes it")

    def handle(self, *args, verb: str, server: str, **options) -> None:
        self.server = find_server(services.local_node(), server)
        try:
            getattr(self, f"do_{verb}")(**options)
        except RefusedError as exc:
            raise CommandError(exc.message) from None

    def find_message(self, ref: str) -> QueuedMessage:
        messages = QueuedMessage.objects.filter(server=self.server)
        message = messages.filter(pk=int(ref)).first() if ref.isdigit() else None
        message = message or messages.filter(name__in=[ref, f"{ref}.eml"]).first()
        if message is None:
            raise CommandError(
                gettext("No queued message %(message)s on %(server)s. See `smtpqueue list`.")
                % {"message": repr(ref), "server": repr(self.server.name)}
            )
        return message

    def do_list(self, **_) -> None:
        entries = delivery.reconcile_and_list_queue(self.server)
        if not entries:
            self.stdout.write("The queue is empty.")
        for entry in entries:
            if entry.held:
                state = "held (sender blocked; winpop release)"
            elif entry.frozen:
                state = "frozen"
            elif entry.in_delivery or entry.next_retry_at is None:
                state = "delivering"
            else:
                state = f"next retry {entry.next_retry_at:%Y-%m-%d %H:%M:%S}"
            self.stdout.write(
                f"{entry.id}  {entry.name}  <{entry.sender}>  {entry.size_octets} octets  "
                f"queued {entry.queued_at:%Y-%m-%d %H:%M:%S}  attempts {entry.attempts}  {state}"
            )
            for recipient in entry.recipients:
                self.stdout.write(f"    {recipient.address}  {recipient.state}  {recipient.last_reply}".rstrip())

    def do_retry(self, message: str, **_) -> None:
        delivery.retry_now(self.find_message(message), actor=ACTOR)
        self.stdout.write(f"Message {message} is due now.")

    def do_freeze(self, message: str, **_) -> None:
        delivery.freeze(self.find_message(message), actor=ACTOR)
        self.stdout.write(f"Message {message} is frozen.")

    def do_unfreeze(self, message: str, **_) -> None:
        delivery.unfreeze(self.find_message(message), actor=ACTOR)
        self.stdout.write(f"Message {message} is no longer frozen.")

    def do_delete(self, message: str, ndr: bool, **_) -> None:
        delivery.delete_message(self.find_message(message), ndr=ndr, actor=ACTOR)
        self.stdout.write(f"Message {message} was deleted{' and the sender told' if ndr else ''}.")

    def do_delivery(self, assignments: list[str], **_) -> None:
        changes = {}
        for setting in assignments:
            name, sep, value = setting.partition("=")
            if not sep:
                raise CommandError(
                    gettext("Write settings as NAME=VALUE, not %(setting)s.") % {"setting": repr(setting)}
                )
            if name not in delivery.EDITABLE_DELIVERY_FIELDS:
                raise CommandError(
                    gettext("%(name)s is not a Delivery setting: %(settings)s")
                    % {"name": name, "settings": ", ".join(delivery.EDITABLE_DELIVERY_FIELDS)}
                )
            flag = parse_bool(value) if name.startswith("attempt_") else None
            changes[name] = value if flag is None else flag  # a word that is neither is refused by the service
        config = (
            delivery.update_delivery_settings(self.server, actor=ACTOR, **changes)
            if changes
            else delivery.delivery_settings(self.server)
        )
        for name in delivery.EDITABLE_DELIVERY_FIELDS:
            value = getattr(config, name)
            shown = "********" if name in delivery.SECRET_FIELDS and value else value
            self.stdout.write(f"{name}={shown}")

    def do_route(self, domain: str, smart_host: str, port: int, user: str, password: str | None, **_) -> None:
        route = delivery.set_remote_domain_route(
            find_domain(self.server, domain),
            smart_host=smart_host,
            port=port,
            username=user,
            password=password,
            actor=ACTOR,
        )
        self.stdout.write(f"{domain}: {'via ' + route.smart_host + ':' + str(route.port) if route else 'MX records'}")
