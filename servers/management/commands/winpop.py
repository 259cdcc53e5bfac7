"""`manage.py winpop`: the Windows POP3 service's command, verb for verb (HELP lists the verbs)."""

from __future__ import annotations

import os
import pwd

from django.core.management.base import CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop, ngettext

from servers import maildir, services
from servers.management.language import TranslatedCommand
from servers.models import Domain, DomainType, GroupAddress, Mailbox, VirtualServer
from servers.services import RefusedError, outbound_limits
from servers.services.mailboxes import OUTBOUND_LIMIT_FIELDS, canonical_local_part, own_maildir, split_address
from servers.storage import UnsafePathError

ACTOR = "winpop"
# What `winpop help` prints, translated when it runs.
HELP = gettext_noop("""\
`manage.py winpop`: the Windows POP3 service's command, verb for verb.

    winpop add DOMAIN                              a local domain (on --server, default: the first server)
    winpop add USER@DOMAIN /createuser PASSWORD    a mailbox
    winpop delete DOMAIN                           the domain and its mailboxes (stored mail is kept)
    winpop delete USER@DOMAIN [/deleteuser]        a mailbox; /deleteuser also removes its stored mail
    winpop list [DOMAIN]                           domains, or the mailboxes of one
    winpop lock|unlock DOMAIN|USER@DOMAIN          locked: receives mail, cannot log in
    winpop stat [DOMAIN]                           mailboxes, messages and size per domain
    winpop changepwd USER@DOMAIN NEWPASSWORD
    winpop createquotafile USER@DOMAIN [/user:NAME]   write the Maildir++ maildirsize file (owned by NAME)
    winpop help

MailConsole additions:
    winpop setquota USER@DOMAIN BYTES [MESSAGES]   0 means no limit
    winpop catchall USER@DOMAIN [off]              receive mail for unknown addresses of the domain
    winpop group add ADDRESS [MEMBER@DOMAIN ...]   a group address delivering to several mailboxes
    winpop group delete ADDRESS
    winpop group list [DOMAIN]
    winpop blocked                                 mailboxes blocked from sending by an outbound limit
    winpop release USER@DOMAIN [/deleteheld]       let it send again; its held mail goes (or is deleted)
    winpop sendlimits USER@DOMAIN HOUR DAY NEWRCPT the mailbox's own outbound limits ("-": the server's; 0: none)
""")


def is_address(argument: str) -> bool:
    return "@" in argument


class Command(TranslatedCommand):
    help = "Manage POP3 domains and mailboxes with the Windows `winpop` syntax (see `winpop help`)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("verb", nargs="?", default="help")
        parser.add_argument("arguments", nargs="*")
        parser.add_argument("--server", help="virtual server for `add DOMAIN` (name or id)")

    def handle(self, *args, verb: str, arguments: list[str], server: str | None, **options) -> None:
        self.server_ref = server
        handler = getattr(self, f"do_{verb.lower()}", None)
        if handler is None:
            raise CommandError(_("Unknown verb %(verb)s. Run `winpop help`.") % {"verb": repr(verb)})
        try:
            handler(*arguments)
        except TypeError:
            raise CommandError(
                _("Wrong arguments for `winpop %(verb)s`. Run `winpop help`.") % {"verb": verb}
            ) from None
        except RefusedError as exc:
            raise CommandError(exc.message) from None

    # -- the Windows verbs -------------------------------------------------------------------
    def do_help(self) -> None:
        self.stdout.write(_(HELP).strip())

    def do_add(self, target: str, *rest: str) -> None:
        if not is_address(target):
            if rest:
                raise CommandError(_("Usage: winpop add DOMAIN"))
            domain = services.add_domain(self.target_server(), target, type=DomainType.LOCAL, actor=ACTOR)
            self.stdout.write(_("Added domain %(domain)s.") % {"domain": domain.name})
            return
        if len(rest) != 2 or rest[0].lower() != "/createuser":
            raise CommandError(
                _("Usage: winpop add USER@DOMAIN /createuser PASSWORD (a mailbox needs a password to log in)")
            )
        local_part, domain_name = split_address(target)
        domain = services.find_local_domain(domain_name)
        mailbox = services.add_mailbox(domain, local_part, rest[1], actor=ACTOR)
        self.stdout.write(_("Added mailbox %(address)s.") % {"address": mailbox.address})

    def do_delete(self, target: str, *flags: str) -> None:
        unknown = [f for f in flags if f.lower() != "/deleteuser"]
        if unknown:
            raise CommandError(_("Unknown option %(option)s.") % {"option": repr(unknown[0])})
        if is_address(target):
            mailbox = services.find_mailbox(target)
            services.delete_mailbox(mailbox, remove_mail=bool(flags), actor=ACTOR)
            if flags:
                self.stdout.write(_("Deleted mailbox %(address)s.") % {"address": mailbox.address})
            else:
                self.stdout.write(
                    _("Deleted mailbox %(address)s. Its stored mail was kept in %(folder)s.")
                    % {"address": mailbox.address, "folder": mailbox.maildir}
                )
            return
        domain = self.find_domain(target)
        for mailbox in domain.mailboxes.all():
            services.delete_mailbox(mailbox, remove_mail=bool(flags), actor=ACTOR)
        services.remove_domain(domain, actor=ACTOR)
        self.stdout.write(_("Deleted domain %(domain)s.") % {"domain": domain.name})

    def do_list(self, domain_name: str | None = None) -> None:
        if domain_name is None:
            domains = Domain.objects.filter(type=DomainType.LOCAL).select_related("server")
            heads = (_("DOMAIN"), _("SERVER"), _("MAILBOXES"), _("STATE"))
            self.stdout.write(f"{heads[0]:<40} {heads[1]:<30} {heads[2]:>9}  {heads[3]}")
            for domain in domains:
                state = _("locked") if domain.is_locked else _("unlocked")
                self.stdout.write(f"{domain.name:<40} {domain.server.name:<30} {domain.mailboxes.count():>9}  {state}")
            return
        domain = self.find_domain(domain_name)
        self.stdout.write(_("Mailboxes of %(domain)s:") % {"domain": domain.name})
        for mailbox in domain.mailboxes.order_by("local_part"):
            notes = [
                n
                for n, on in (
                    (_("locked"), mailbox.is_locked),
                    (_("catch-all"), mailbox.is_catch_all),
                    (_("sending-blocked"), mailbox.sending_blocked_at is not None),
                )
                if on
            ]
            self.stdout.write(f"  {mailbox.address:<50} {' '.join(notes)}")

    def do_lock(self, target: str) -> None:
        self._set_lock(target, True)

    def do_unlock(self, target: str) -> None:
        self._set_lock(target, False)

    def _set_lock(self, target: str, locked: bool) -> None:
        if is_address(target):
            mailbox = services.set_mailbox_lock(services.find_mailbox(target), locked, actor=ACTOR)
            done = _("Locked mailbox %(name)s.") if locked else _("Unlocked mailbox %(name)s.")
            self.stdout.write(done % {"name": mailbox.address})
        else:
            domain = services.set_domain_lock(self.find_domain(target), locked, actor=ACTOR)
            done = _("Locked domain %(name)s.") if locked else _("Unlocked domain %(name)s.")
            self.stdout.write(done % {"name": domain.name})

    def do_blocked(self) -> None:
        blocked = outbound_limits.blocked_mailboxes(Mailbox.objects.all())
        heads = (_("MAILBOX"), _("SINCE"), _("HELD"), _("REASON"))
        self.stdout.write(f"{heads[0]:<50} {heads[1]:<17} {heads[2]:>5}  {heads[3]}")
        for mailbox in blocked:
            since = mailbox.sending_blocked_at.strftime("%Y-%m-%d %H:%M") if mailbox.sending_blocked_at else ""
            held = outbound_limits.held_count(mailbox)
            self.stdout.write(f"{mailbox.address:<50} {since:<17} {held:>5}  {mailbox.sending_blocked_reason}")

    def do_release(self, address: str, *flags: str) -> None:
        unknown = [f for f in flags if f.lower() != "/deleteheld"]
        if unknown:
            raise CommandError(_("Unknown option %(option)s.") % {"option": repr(unknown[0])})
        mailbox = services.find_mailbox(address)
        if mailbox.sending_blocked_at is None and not outbound_limits.held_count(mailbox):
            raise CommandError(_("%(address)s is not blocked from sending.") % {"address": mailbox.address})
        count = outbound_limits.release_sending(mailbox, delete_held=bool(flags), actor=ACTOR)
        if flags:
            done = ngettext(
                "Released %(address)s: it may send again; %(count)d held message deleted.",
                "Released %(address)s: it may send again; %(count)d held messages deleted.",
                count,
            )
        else:
            done = ngettext(
                "Released %(address)s: it may send again; %(count)d held message sent on.",
                "Released %(address)s: it may send again; %(count)d held messages sent on.",
                count,
            )
        self.stdout.write(done % {"address": mailbox.address, "count": count})

    def do_sendlimits(self, address: str, per_hour: str, per_day: str, new_per_day: str) -> None:
        mailbox = services.find_mailbox(address)
        values = [None if value == "-" else value for value in (per_hour, per_day, new_per_day)]
        mailbox = services.update_mailbox(mailbox, actor=ACTOR, **dict(zip(OUTBOUND_LIMIT_FIELDS, values, strict=True)))
        limits = {field.removeprefix("outbound_max_"): getattr(mailbox, field) for field in OUTBOUND_LIMIT_FIELDS}
        server_word = _("server")
        shown = ", ".join(f"{name}={server_word if value is None else value}" for name, value in limits.items())
        self.stdout.write(
            _("Outbound limits of %(address)s: %(limits)s.") % {"address": mailbox.address, "limits": shown}
        )

    def do_stat(self, domain_name: str | None = None) -> None:
        domains = [self.find_domain(domain_name)] if domain_name else list(Domain.objects.filter(type=DomainType.LOCAL))
        heads = (_("DOMAIN"), _("MAILBOXES"), _("MESSAGES"), _("SIZE (KB)"))
        self.stdout.write(f"{heads[0]:<40} {heads[1]:>9} {heads[2]:>9} {heads[3]:>10}")
        totals = [0, 0, 0]
        for domain in domains:
            mailboxes = list(domain.mailboxes.select_related("domain__server"))
            usages = [services.mailbox_usage(m) for m in mailboxes]
            row = [len(mailboxes), sum(u.message_count for u in usages), sum(u.size_bytes for u in usages)]
            totals = [a + b for a, b in zip(totals, row, strict=True)]
            self.stdout.write(f"{domain.name:<40} {row[0]:>9} {row[1]:>9} {row[2] / 1024:>10.1f}")
        if len(domains) > 1:
            total = _("Total")
            self.stdout.write(f"{total:<40} {totals[0]:>9} {totals[1]:>9} {totals[2] / 1024:>10.1f}")

    def do_changepwd(self, address: str, new_password: str) -> None:
        mailbox = services.change_password(services.find_mailbox(address), new_password, actor=ACTOR)
        self.stdout.write(_("Changed the password of %(address)s.") % {"address": mailbox.address})

    def do_createquotafile(self, address: str, *flags: str) -> None:
        mailbox = services.find_mailbox(address)
        owner = None
        for flag in flags:
            if not flag.lower().startswith("/user:"):
                raise CommandError(_("Unknown option %(option)s; use /user:NAME.") % {"option": repr(flag)})
            name = flag.split(":", 1)[1]
            try:
                owner = pwd.getpwnam(name)
            except KeyError:
                raise CommandError(_("There is no user %(name)s on this system.") % {"name": repr(name)}) from None
        try:
            path = write_maildirsize(mailbox)
        except UnsafePathError as error:
            raise CommandError(
                _("%(address)s: %(reason)s; its mail folder is not written to.")
                % {"address": mailbox.address, "reason": error.strerror}
            ) from None
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)
        if owner is not None:
            self.stdout.write(
                _("Wrote the quota file %(path)s, owned by %(user)s.") % {"path": path, "user": owner.pw_name}
            )
        else:
            self.stdout.write(_("Wrote the quota file %(path)s.") % {"path": path})

    # -- MailConsole additions ---------------------------------------------------------------
    def do_setquota(self, address: str, quota_bytes: str, quota_messages: str = "0") -> None:
        mailbox = services.update_mailbox(
            services.find_mailbox(address), quota_bytes=quota_bytes, quota_messages=quota_messages, actor=ACTOR
        )
        unlimited = _("unlimited")
        self.stdout.write(
            _("Quota of %(address)s: %(bytes)s bytes, %(messages)s messages.")
            % {
                "address": mailbox.address,
                "bytes": mailbox.quota_bytes or unlimited,
                "messages": mailbox.quota_messages or unlimited,
            }
        )

    def do_catchall(self, address: str, switch: str = "on") -> None:
        if switch not in ("on", "off"):
            raise CommandError(_("Usage: winpop catchall USER@DOMAIN [off]"))
        mailbox = services.set_catch_all(services.find_mailbox(address), switch == "on", actor=ACTOR)
        if mailbox.is_catch_all:
            done = _("%(address)s now receives mail for unknown addresses of %(domain)s.")
        else:
            done = _("%(address)s no longer receives mail for unknown addresses of %(domain)s.")
        self.stdout.write(done % {"address": mailbox.address, "domain": mailbox.domain.name})

    def do_group(self, action: str, *arguments: str) -> None:
        if action == "list":
            groups = GroupAddress.objects.select_related("domain").prefetch_related("members__domain")
            if arguments:
                groups = groups.filter(domain=self.find_domain(arguments[0]))
            for group in groups:
                addresses = ", ".join(m.address for m in group.members.all()) or _("(the Drop folder)")
                self.stdout.write(f"  {group!s:<40} -> {addresses}")
        elif action == "add" and arguments:
            local_part, domain_name = split_address(arguments[0])
            members = [services.find_mailbox(a, field="members") for a in arguments[1:]]
            group = services.add_group(services.find_local_domain(domain_name), local_part, members, actor=ACTOR)
            self.stdout.write(
                ngettext(
                    "Added group %(group)s with %(count)d member.",
                    "Added group %(group)s with %(count)d members.",
                    len(members),
                )
                % {"group": group, "count": len(members)}
            )
        elif action == "delete" and len(arguments) == 1:
            local_part, domain_name = split_address(arguments[0])
            group = GroupAddress.objects.filter(
                local_part=canonical_local_part(local_part), domain__name=domain_name
            ).first()
            if group is None:
                raise CommandError(_("There is no group %(group)s.") % {"group": arguments[0]})
            services.remove_group(group, actor=ACTOR)
            self.stdout.write(_("Deleted group %(group)s.") % {"group": arguments[0]})
        else:
            raise CommandError(_("Usage: winpop group add ADDRESS [MEMBER...] | delete ADDRESS | list [DOMAIN]"))

    # -- lookups -----------------------------------------------------------------------------
    def find_domain(self, name: str) -> Domain:
        return services.find_local_domain(name)

    def target_server(self) -> VirtualServer:
        servers = VirtualServer.objects.on_node(services.local_node()).order_by("pk")
        if self.server_ref:
            ref = self.server_ref
            server = servers.filter(pk=int(ref)).first() if ref.isdigit() else servers.filter(name=ref).first()
        else:
            server = servers.filter(is_submission=False).first()  # a submission server holds no domain
        if server is None:
            raise CommandError(_("No virtual server to add the domain to; create one with `smtpsvc create`."))
        return server


def write_maildirsize(mailbox: Mailbox) -> str:
    """The Maildir++ quota file: the limits on the first line, then the current usage."""
    folder = own_maildir(mailbox)  # refuses a legacy name that would make it another mailbox's folder
    size_octets, count = maildir.usage(folder)
    limits = []
    if mailbox.quota_bytes:
        limits.append(f"{mailbox.quota_bytes}S")
    if mailbox.quota_messages:
        limits.append(f"{mailbox.quota_messages}C")
    path = folder / "maildirsize"
    maildir.ensure_maildir(folder)
    path.write_text(f"{','.join(limits) or '0S'}\n{size_octets} {count}\n")
    return str(path)
