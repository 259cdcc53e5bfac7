"""`manage.py smtpsvc`: the virtual SMTP servers of this node from the command line."""

from __future__ import annotations

import time
from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from servers import services
from servers.management.language import TranslatedCommand
from servers.models import DkimAlgorithm, Domain, Node, ObservedState, ServiceState, VirtualServer
from servers.services import RefusedError, dns_readiness
from servers.services.dkim import DkimRecord, dkim_record

ACTOR = "cli"
WAIT_S = 20


def find_server(node: Node, ref: str) -> VirtualServer:
    servers = VirtualServer.objects.on_node(node).select_related("node")
    server = servers.filter(pk=int(ref)).first() if ref.isdigit() else None
    server = server or servers.filter(name=ref).first()
    if server is None:
        raise CommandError(f"No virtual server {ref!r} on node {node.name}. See `smtpsvc list`.")
    return server


def find_domain(server: VirtualServer, name: str) -> Domain:
    domain = server.domains.filter(name=services.canonical_domain_name(name)).first()
    if domain is None:
        raise CommandError(f"Server {server.name!r} has no domain {name!r}.")
    return domain


def find_node_domain(node: Node, name: str, server_ref: str | None) -> Domain:
    """A domain of this node's servers by name (`server_ref` picks the server when several have it)."""
    domains = Domain.objects.filter(server__node=node, name=services.canonical_domain_name(name))
    if server_ref is not None:
        domains = domains.filter(server=find_server(node, server_ref))
    found = list(domains.select_related("server", "alias_of")[:2])
    if not found:
        raise CommandError(f"No server of node {node.name} has the domain {name!r}.")
    if len(found) > 1:
        raise CommandError(f"More than one server has the domain {name!r}; name one with --server.")
    return found[0]


def describe_dkim_record(record: DkimRecord) -> list[str]:
    quoted = " ".join(f'"{part}"' for part in record.txt_strings)
    lines = [
        f"DKIM key of {record.domain}: selector {record.selector} ({record.algorithm}), "
        f"since {record.created_at:%Y-%m-%d %H:%M} UTC",
        "Publish this TXT record:",
        f"  name:  {record.txt_name}",
        f"  value: {record.txt_value}",
        f"  zone file: {record.txt_name}. IN TXT ( {quoted} )",
    ]
    if record.retired_selectors:
        lines.append(
            f"Retired selectors: {', '.join(record.retired_selectors)} (take their records down, then "
            f"`smtpsvc dkim {record.domain} remove-retired`)"
        )
    return lines


def describe_dns_report(report: dns_readiness.Report) -> list[str]:
    """The checks as a table, each not-ok one followed by the zone-file lines to publish."""
    width = max(len(check.label) for check in report.checks)
    lines = [f"DNS records of {report.domain} (asked {report.resolver}, {report.elapsed_s:.1f} s)"]
    lines.append(f"{'STATUS':<8} {'RECORD':<{width}}  EXPLANATION")
    for check in report.checks:
        lines.append(f"{check.status:<8} {check.label:<{width}}  {check.explanation}")
        lines += [f"{'':<8} {'':<{width}}  found:   {value}" for value in check.found if not check.ok]
        lines += [f"{'':<8} {'':<{width}}  publish: {record.zone_line}" for record in check.publish]
    return lines


class Command(TranslatedCommand):
    help = "Create, change, start, pause and stop virtual SMTP servers and their domains."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="verb", required=True)
        sub.add_parser("list", help="servers of this node with their states")
        show = sub.add_parser("show", help="one server's settings and domains")
        show.add_argument("server")

        create = sub.add_parser("create", help="the New SMTP Virtual Server wizard")
        create.add_argument("name")
        create.add_argument("--ip", default=None, help="IP address (default: all unassigned, 0.0.0.0)")
        create.add_argument("--port", type=int, default=25)
        create.add_argument("--home", default=None, help="home directory (cannot be changed later)")
        create.add_argument("--domain", required=True, help="default domain")
        create.add_argument("--stopped", action="store_true", help="create it stopped")

        change = sub.add_parser("set", help="change a server's settings")
        change.add_argument("server")
        change.add_argument("--name")
        change.add_argument("--ip")
        change.add_argument("--port", type=int)
        change.add_argument("--home", help="always refused: the home directory is fixed")
        change.add_argument("--max-message-size-kb", type=int)
        # Not "settings": Django's own --settings option would read it as a settings module.
        change.add_argument(
            "assignments",
            nargs="*",
            metavar="SETTING=VALUE",
            help="any property-sheet setting, e.g. max_connections=50 require_tls=true",
        )

        for list_name in ("access", "relay"):
            rules = sub.add_parser(list_name, help=f"the {list_name} list of a server (add|remove|list)")
            rules.add_argument("server")
            rules.add_argument("action", choices=["add", "remove", "list"])
            rules.add_argument("kind", nargs="?", choices=["address", "network", "range", "domain"])
            rules.add_argument("value", nargs="?")

        tls = sub.add_parser("certificate", help="install a PEM certificate and key for a server's TLS")
        tls.add_argument("server")
        tls.add_argument("cert_file")
        tls.add_argument("key_file")

        sessions = sub.add_parser("sessions", help="current sessions of a server; --terminate ID closes one")
        sessions.add_argument("server")
        sessions.add_argument("--terminate", metavar="SESSION_ID")

        delete = sub.add_parser("delete", help="delete a server (its home directory stays on disk)")
        delete.add_argument("server")

        for verb in ("start", "pause", "stop"):
            action = sub.add_parser(verb, help=f"{verb} a server, or the whole SMTP service of this node")
            action.add_argument("server", nargs="?", help="omit to act on every server of the node")
            action.add_argument("--no-wait", action="store_true", help="do not wait for the new state")

        domain = sub.add_parser("domain", help="domains of a server")
        domain_sub = domain.add_subparsers(dest="domain_verb", required=True)
        d_list = domain_sub.add_parser("list")
        d_list.add_argument("server")
        d_add = domain_sub.add_parser("add")
        d_add.add_argument("server")
        d_add.add_argument("domain")
        d_add.add_argument("--type", choices=["local", "alias", "remote"], default="local")
        d_add.add_argument("--alias-of")
        d_add.add_argument("--relay", action="store_true", help="remote: allow mail to be relayed to it")
        d_remove = domain_sub.add_parser("remove")
        d_remove.add_argument("server")
        d_remove.add_argument("domain")
        d_default = domain_sub.add_parser("default")
        d_default.add_argument("server")
        d_default.add_argument("domain")
        d_ceiling = domain_sub.add_parser("ceiling", help="the largest mailbox quota a domain administrator may give")
        d_ceiling.add_argument("server")
        d_ceiling.add_argument("domain")
        d_ceiling.add_argument("megabytes", help="0 removes the ceiling")
        d_language = domain_sub.add_parser("language", help="the language of the reports to the domain's people")
        d_language.add_argument("server")
        d_language.add_argument("domain")
        d_language.add_argument("language", help="en, ru, or - for the installation's (MAILCONSOLE_MAIL_LANGUAGE)")

        dkim = sub.add_parser("dkim", help="a local domain's DKIM key: the TXT record to publish, generate, rotate")
        dkim.add_argument("domain")
        dkim.add_argument(
            "action",
            choices=["show", "generate", "rotate", "remove-retired"],
            help="rotate: a new selector signs at once and the old one is kept (retired) until remove-retired",
        )
        dkim.add_argument("--server", help="the server, when more than one on this node has the domain")
        dkim.add_argument(
            "--algorithm",
            choices=list(DkimAlgorithm.values),
            help="for generate and rotate: rsa-sha256 (RSA-2048, the default) or ed25519-sha256",
        )

        dns_check = sub.add_parser(
            "dns-check",
            help="a local domain's DNS records (MX, PTR, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, autoconfig, SRV): "
            "ok, missing or wrong, and what to publish; exit code 1 unless all are ok",
        )
        dns_check.add_argument("domain")
        dns_check.add_argument("--server", help="the server, when more than one on this node has the domain")

    def handle(self, *args, verb: str, **options) -> None:
        self.node = services.local_node()
        try:
            getattr(self, f"do_{verb.replace('-', '_')}")(**options)
        except RefusedError as exc:
            raise CommandError(exc.message) from None

    # -- reading -----------------------------------------------------------------------------
    def do_list(self, **_) -> None:
        self.stdout.write(f"Node {self.node.name}: SMTP service {self.node.smtp_service_state}")
        self.stdout.write(f"{'ID':>4}  {'NAME':<32} {'ADDRESS':<22} {'DESIRED':<8} {'STATE':<9} {'RESTARTS':>8}")
        for server in VirtualServer.objects.on_node(self.node).select_related("node"):
            address = f"{server.ip_address}:{server.port}"
            self.stdout.write(
                f"{server.pk:>4}  {server.name:<32} {address:<22} {server.desired_state:<8} "
                f"{server.state:<9} {server.restart_count:>8}"
            )
            if server.state == ObservedState.ERROR and server.last_error:
                self.stdout.write(f"      error: {server.last_error}")

    def do_show(self, server: str, **_) -> None:
        srv = find_server(self.node, server)
        rows = [
            ("id", srv.pk),
            ("name", srv.name),
            ("node", srv.node.name),
            ("ip address", srv.ip_address),
            ("port", srv.port),
            ("home directory", srv.home_dir),
            ("max message size (KB)", srv.max_message_size_kb),
            ("desired state", srv.desired_state),
            ("effective desired state", srv.effective_desired_state),
            ("state", srv.state),
            ("pid", srv.pid or "-"),
            ("restarts", srv.restart_count),
            ("last error", srv.last_error or "-"),
        ]
        for label, value in rows:
            self.stdout.write(f"{label + ':':<26}{value}")
        self.do_domain_list(srv)

    def do_domain_list(self, server: VirtualServer) -> None:
        self.stdout.write("domains:")
        for domain in server.domains.select_related("alias_of"):
            notes = []
            if domain.is_default:
                notes.append("default")
            if domain.alias_of:
                notes.append(f"alias of {domain.alias_of.name}")
            if domain.relay_allowed:
                notes.append("relay allowed")
            if domain.max_mailbox_quota_mb:
                notes.append(f"quota ceiling {domain.max_mailbox_quota_mb} MB")
            self.stdout.write(f"  {domain.name:<40} {domain.type:<7} {', '.join(notes)}")

    # -- changing ----------------------------------------------------------------------------
    def do_create(
        self, name: str, ip: str | None, port: int, home: str | None, domain: str, stopped: bool, **_
    ) -> None:
        server = services.create_virtual_server(
            name=name,
            ip_address=ip,
            port=port,
            home_dir=home,
            default_domain=domain,
            node=self.node,
            start=not stopped,
            actor=ACTOR,
        )
        self.stdout.write(
            f"Created server {server.pk} {server.name!r} on {server.ip_address}:{server.port}, home {server.home_dir}"
        )

    def do_set(self, server: str, name, ip, port, home, max_message_size_kb, assignments, **_) -> None:
        srv = find_server(self.node, server)
        changes = {
            "name": name,
            "ip_address": ip,
            "port": port,
            "home_dir": home,
            "max_message_size_kb": max_message_size_kb,
        }
        changes = {key: value for key, value in changes.items() if value is not None}
        for setting in assignments:
            key, equals, value = setting.partition("=")
            if not equals:
                raise CommandError(f"Write settings as NAME=VALUE, not {setting!r}.")
            changes[key.strip()] = None if value.strip().lower() in ("", "none") else value.strip()
        if not changes:
            raise CommandError("Nothing to change: give at least one option.")
        srv = services.update_virtual_server(srv, actor=ACTOR, **changes)
        self.stdout.write(f"Server {srv.pk} {srv.name!r} updated.")

    def do_access(self, **options) -> None:
        self._rules("access", **options)

    def do_relay(self, **options) -> None:
        self._rules("relay", **options)

    def _rules(self, list_name: str, server: str, action: str, kind: str | None, value: str | None, **_) -> None:
        srv = find_server(self.node, server)
        rules = srv.access_rules if list_name == "access" else srv.relay_rules
        if action == "list":
            if list_name == "access":
                mode = "only the list below" if srv.connection_policy == "only_listed" else "all except the list below"
                self.stdout.write(f"Connections allowed from: {mode}")
            for rule in rules.all():
                self.stdout.write(f"  {rule.kind:<8} {rule.value}")
            return
        if not kind or not value:
            raise CommandError(f"Usage: smtpsvc {list_name} SERVER {action} KIND VALUE")
        if action == "add":
            add = services.add_access_rule if list_name == "access" else services.add_relay_rule
            rule = add(srv, kind, value, actor=ACTOR)
            self.stdout.write(f"Added {rule.kind} {rule.value} to the {list_name} list of {srv.name!r}.")
        else:
            rule = rules.filter(kind=kind, value=value.strip()).first()
            if rule is None:
                raise CommandError(f"The {list_name} list of {srv.name!r} has no {kind} {value}.")
            remove = services.remove_access_rule if list_name == "access" else services.remove_relay_rule
            remove(rule, actor=ACTOR)
            self.stdout.write(f"Removed {kind} {value} from the {list_name} list of {srv.name!r}.")

    def do_certificate(self, server: str, cert_file: str, key_file: str, **_) -> None:
        srv = find_server(self.node, server)
        try:
            cert_pem, key_pem = Path(cert_file).read_bytes(), Path(key_file).read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read the PEM files: {exc}") from None
        services.set_server_certificate(srv, cert_pem, key_pem, actor=ACTOR)
        self.stdout.write(f"Installed the certificate for {srv.name!r}; the server picks it up at once.")

    def do_sessions(self, server: str, terminate: str | None, **_) -> None:
        srv = find_server(self.node, server)
        if terminate:
            services.terminate_session(srv, terminate, actor=ACTOR)
            self.stdout.write(f"Asked the server to close session {terminate}.")
            return
        for session in services.list_sessions(srv):
            since = time.strftime("%H:%M:%S", time.localtime(session["connected_at"]))
            self.stdout.write(
                f"  {session['id']}  {session['client']:<16} {session['user'] or '-':<30} "
                f"since {since}  {session['state']:<10} {session['messages']} msg"
            )

    def do_delete(self, server: str, **_) -> None:
        srv = find_server(self.node, server)
        services.delete_virtual_server(srv, actor=ACTOR)
        self.stdout.write(f"Deleted server {srv.name!r}; its home directory {srv.home_dir} was kept.")

    def do_start(self, **options) -> None:
        self._change_state(ServiceState.RUNNING, **options)

    def do_pause(self, **options) -> None:
        self._change_state(ServiceState.PAUSED, **options)

    def do_stop(self, **options) -> None:
        self._change_state(ServiceState.STOPPED, **options)

    def _change_state(self, desired: ServiceState, server: str | None, no_wait: bool, **_) -> None:
        if server is None:
            services.set_node_service_state(self.node, desired, actor=ACTOR)
            self.stdout.write(f"SMTP service of node {self.node.name}: {desired.value}")
            targets = list(VirtualServer.objects.on_node(self.node))
        else:
            srv = services.set_server_state(find_server(self.node, server), desired, actor=ACTOR)
            targets = [srv]
        if not no_wait:
            self._wait_and_report(targets)

    def _wait_and_report(self, targets: list[VirtualServer]) -> None:
        deadline = time.monotonic() + WAIT_S
        pending = {s.pk for s in targets}
        while pending and time.monotonic() < deadline:
            for server in VirtualServer.objects.filter(pk__in=pending).select_related("node"):
                if server.state == server.effective_desired_state or server.state == ObservedState.ERROR:
                    pending.discard(server.pk)
            if pending:
                time.sleep(0.2)
        for server in VirtualServer.objects.filter(pk__in=[s.pk for s in targets]).select_related("node"):
            line = f"  {server.name}: {server.state}"
            if server.state == ObservedState.ERROR:
                line += f" ({server.last_error})"
            elif server.pk in pending:
                line += (
                    f" (wanted {server.effective_desired_state}; is the stack running? "
                    "`make run` starts the node's supervisor)"
                )
            self.stdout.write(line)

    def do_domain(self, domain_verb: str, server: str, **options) -> None:
        srv = find_server(self.node, server)
        if domain_verb == "list":
            self.do_domain_list(srv)
        elif domain_verb == "add":
            domain = services.add_domain(
                srv,
                options["domain"],
                type=options["type"],
                alias_of=options.get("alias_of"),
                relay_allowed=options.get("relay", False),
                actor=ACTOR,
            )
            self.stdout.write(f"Added {domain.type} domain {domain.name} to {srv.name!r}.")
        elif domain_verb == "remove":
            services.remove_domain(find_domain(srv, options["domain"]), actor=ACTOR)
            self.stdout.write(f"Removed domain {options['domain']} from {srv.name!r}.")
        elif domain_verb == "default":
            domain = services.set_default_domain(find_domain(srv, options["domain"]), actor=ACTOR)
            self.stdout.write(f"{domain.name} is now the default domain of {srv.name!r}.")
        elif domain_verb == "ceiling":
            domain = services.set_mailbox_quota_ceiling(
                find_domain(srv, options["domain"]), options["megabytes"], actor=ACTOR
            )
            ceiling = f"{domain.max_mailbox_quota_mb} MB" if domain.max_mailbox_quota_mb else "none"
            self.stdout.write(f"Quota ceiling of {domain.name} for its domain administrators: {ceiling}.")
        elif domain_verb == "language":
            language = "" if options["language"] == "-" else options["language"]
            domain = services.set_domain_language(find_domain(srv, options["domain"]), language, actor=ACTOR)
            self.stdout.write(
                f"Reports to {domain.name} are written in: {domain.language or 'the installation language'}."
            )

    def do_dkim(self, domain: str, action: str, server: str | None, algorithm: str | None, **_) -> None:
        target = find_node_domain(self.node, domain, server)
        if action == "generate":
            services.generate_dkim_key(target, algorithm=algorithm or DkimAlgorithm.RSA_SHA256, actor=ACTOR)
        elif action == "rotate":
            services.rotate_dkim_key(target, algorithm=algorithm, actor=ACTOR)
        elif action == "remove-retired":
            removed = services.remove_retired_dkim_keys(target, actor=ACTOR)
            self.stdout.write(
                f"Removed {len(removed)} retired DKIM key(s) of {target.name}: {', '.join(removed) or '-'}"
            )
            return
        record = dkim_record(target)
        if record is None:
            self.stdout.write(f"{target.name} has no DKIM key: its mail goes out unsigned. `generate` makes one.")
            return
        for line in describe_dkim_record(record):
            self.stdout.write(line)

    def do_dns_check(self, domain: str, server: str | None, **_) -> None:
        report = dns_readiness.check_domain(find_node_domain(self.node, domain, server))
        for line in describe_dns_report(report):
            self.stdout.write(line)
        if not report.ok:
            raise CommandError(f"{report.problems} of {len(report.checks)} DNS checks are not ok.", returncode=1)
