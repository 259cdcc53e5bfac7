"""Create, change, start, pause, stop and delete virtual SMTP servers."""

from __future__ import annotations

import ipaddress
import re
import ssl
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q

from mailconsole.words import parse_bool
from servers.content_checks import parse_http_url, parse_scanner_address
from servers.message_filters import split_words
from servers.models import (
    Domain,
    DomainType,
    ImapService,
    Mailbox,
    Node,
    Pop3Service,
    ServiceState,
    SupervisedProcess,
    VirtualServer,
)
from servers.smtp_policy import RuleError, parse_sender_list, split_zone_list
from servers.storage import write_durably

from .audit import record_change, snapshot_of
from .errors import RefusedError
from .names import canonical_domain_name, check_home_dir_text, check_path_name
from .nodes import local_node, request_reconcile
from .postmaster import ensure_postmaster

# The IIS home-directory layout; `.tmp` holds files being written before their atomic rename.
HOME_SUBDIRS = ("BadMail", "Drop", "Pickup", "Queue", ".tmp")
ALL_UNASSIGNED = "0.0.0.0"
# Every setting of a virtual server that the services let change, in the order of its property sheet
# (IIS's): the tab that shows it and how it is checked ("own": by its name in `_clean_setting`). This
# is the one list to extend with a new setting; the API, the admin, `smtpsvc set` and the console's
# tabs follow it (workers read theirs in `servers/snapshot.py`).
SERVER_SETTINGS: tuple[tuple[str, str, str], ...] = (
    # name, tab, check
    ("name", "general", "own"),
    ("ip_address", "general", "own"),
    ("port", "general", "own"),
    ("max_connections", "general", "optional_limit"),
    ("max_connections_per_client", "general", "optional_limit"),
    ("idle_timeout_s", "general", "positive"),
    ("max_session_duration_s", "general", "positive"),
    ("min_data_rate_bps", "general", "count"),
    ("protocol_logging", "general", "flag"),
    ("worker_processes", "general", "own"),
    ("allow_anonymous", "access", "flag"),
    ("allow_basic_auth", "access", "flag"),
    ("auth_requires_tls", "access", "flag"),
    ("require_tls", "access", "flag"),
    ("tls_port", "access", "optional_limit"),
    ("connection_policy", "access", "own"),
    ("pop_before_smtp_minutes", "access", "count"),
    ("require_client_ptr", "access", "flag"),
    ("require_auth_for_local_senders", "access", "flag"),
    ("harvest_unknown_recipients_limit", "access", "count"),
    ("max_messages_per_sender_per_hour", "access", "count"),
    ("max_messages_per_client_per_hour", "access", "count"),
    ("max_auth_failures_per_connection", "access", "count"),
    ("max_auth_failures_per_client_per_hour", "access", "count"),
    ("max_message_size_kb", "messages", "positive"),
    ("max_session_size_kb", "messages", "positive"),
    ("max_messages_per_connection", "messages", "positive"),
    ("max_recipients_per_message", "messages", "positive"),
    ("max_hop_count", "delivery", "positive"),
    ("dnsbl_zones", "antispam", "own"),
    ("dnsbl_action", "antispam", "own"),
    ("greylisting", "antispam", "flag"),
    ("greylisting_delay_s", "antispam", "own"),
    ("spf_action", "antispam", "own"),
    ("dmarc_action", "antispam", "own"),
    ("require_sender_domain", "antispam", "flag"),
    ("ptr_matches_sender", "antispam", "flag"),
    ("sender_allow", "antispam", "own"),
    ("sender_deny", "antispam", "own"),
    ("attachment_filter", "filters", "own"),
    ("forbidden_extensions", "filters", "own"),
    ("forbidden_mime_types", "filters", "own"),
    ("max_attachment_size_kb", "filters", "optional_limit"),
    ("virus_scanner", "filters", "own"),
    ("virus_scanner_failure", "filters", "own"),
    ("rspamd_url", "filters", "own"),
    ("spam_tag_score", "filters", "own"),
    ("spam_subject_prefix", "filters", "own"),
    ("spam_junk_score", "filters", "own"),
    ("spam_refuse_score", "filters", "own"),
    ("outbound_max_messages_per_hour", "outbound", "count"),
    ("outbound_max_messages_per_day", "outbound", "count"),
    ("outbound_max_new_recipients_per_day", "outbound", "count"),
)


def _checked_as(check: str) -> tuple[str, ...]:
    return tuple(name for name, _, how in SERVER_SETTINGS if how == check)


OPTIONAL_LIMIT_FIELDS = _checked_as("optional_limit")  # empty: no limit
POSITIVE_FIELDS = _checked_as("positive")
COUNT_FIELDS = _checked_as("count")  # 0 allowed
FLAG_FIELDS = _checked_as("flag")
EDITABLE_FIELDS = tuple(name for name, _, _ in SERVER_SETTINGS)
MAX_WORKER_PROCESSES = 16
MAX_GREYLISTING_DELAY_S = 86400
MAX_DNSBL_ZONES = 10
# A DNS name's labels (RFC 1035 2.3.1, letters, digits and hyphens), after IDNA encoding.
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_EXTENSION = re.compile(r"^[a-z0-9_+~-]{1,20}$")
# RFC 6838 4.2 type and subtype names, or "type/*".
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/([a-z0-9][a-z0-9!#$&^_.+-]{0,126}|\*)$")


def default_home_dir(name: str) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "server"
    return settings.VAR_DIR / "mailroot" / slug


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise RefusedError("Enter a name for the virtual server.", field="name")
    if len(name) > 100:
        raise RefusedError("The name is at most 100 characters long.", field="name")
    return name


def _clean_ip(raw: str | None) -> str:
    if raw is None or str(raw).strip().lower() in ("", "*", "all", "all unassigned"):
        return ALL_UNASSIGNED
    try:
        return str(ipaddress.ip_address(str(raw).strip()))
    except ValueError:
        raise RefusedError(f"{raw!r} is not an IP address.", field="ip_address") from None


def passwords_need_tls_by_default(ip_address: str) -> bool:
    """Whether a new server or POP3 service on this address takes passwords only under TLS.

    Safe by default: anywhere but loopback (127.0.0.0/8, ::1) a password never crosses the network
    in plaintext unless an administrator turns that on (IIS-compatible plaintext AUTH, USER/PASS).
    "All unassigned" (0.0.0.0, ::) listens on the network too. Loopback keeps plaintext, for local
    tools and `make run`.
    """
    try:
        address = ipaddress.ip_address(ip_address or ALL_UNASSIGNED)
    except ValueError:
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not address.is_loopback


def _clean_port(raw: int | str) -> int:
    try:
        port = int(raw)
    except (TypeError, ValueError):
        raise RefusedError(f"{raw!r} is not a TCP port number.", field="port") from None
    if not 1 <= port <= 65535:
        raise RefusedError("The TCP port must be between 1 and 65535.", field="port")
    return port


def _clean_number(raw: int | str | None, field: str, *, minimum: int) -> int:
    if raw is None or isinstance(raw, bool):
        raise RefusedError(f"{raw!r} is not a number.", field=field)
    try:
        number = int(raw)
    except (TypeError, ValueError):
        raise RefusedError(f"{raw!r} is not a number.", field=field) from None
    if number < minimum:
        raise RefusedError(f"The value must be at least {minimum}.", field=field)
    if number > 2**31 - 1:
        raise RefusedError("The value is too large.", field=field)
    return number


def _clean_flag(raw: object, field: str) -> bool:
    value = False if raw == "" else parse_bool(raw)  # an unticked box in a form sends nothing
    if value is None:
        raise RefusedError(f"{raw!r} is not true or false.", field=field)
    return value


def _clean_setting(field: str, value: Any) -> object:
    """Check one property-sheet value (as a form or the API sent it); raise RefusedError naming the field."""
    if field == "name":
        return _clean_name(value)
    if field == "ip_address":
        return _clean_ip(value)
    if field == "port":
        return _clean_port(value)
    if field == "tls_port":
        return None if value in (None, "", 0) else _clean_port(value)
    if field == "connection_policy":
        if value not in ("all_except", "only_listed"):
            raise RefusedError("Choose all_except or only_listed.", field=field)
        return value
    if field == "worker_processes":
        processes = _clean_number(value, field, minimum=1)
        if processes > MAX_WORKER_PROCESSES:
            raise RefusedError(f"The value must be at most {MAX_WORKER_PROCESSES}.", field=field)
        return processes
    if field == "dnsbl_zones":
        return _clean_dnsbl_zones(value)
    if field == "dnsbl_action":
        if value not in ("tag", "reject"):
            raise RefusedError("Choose tag or reject.", field=field)
        return value
    if field == "spf_action":
        if value not in ("none", "tag", "reject"):
            raise RefusedError("Choose none, tag or reject.", field=field)
        return value
    if field == "dmarc_action":
        if value not in ("none", "honour"):
            raise RefusedError("Choose none or honour.", field=field)
        return value
    if field in ("sender_allow", "sender_deny"):
        return clean_sender_list(value, field)
    if field == "greylisting_delay_s":
        delay_s = _clean_number(value, field, minimum=1)
        if delay_s > MAX_GREYLISTING_DELAY_S:
            raise RefusedError(f"The value must be at most {MAX_GREYLISTING_DELAY_S} (a day).", field=field)
        return delay_s
    if field in FILTER_CHECKS:
        return FILTER_CHECKS[field](value, field)
    if field in OPTIONAL_LIMIT_FIELDS:
        return None if value in (None, "") else _clean_number(value, field, minimum=1)
    if field in POSITIVE_FIELDS:
        return _clean_number(value, field, minimum=1)
    if field in COUNT_FIELDS:
        return _clean_number(value, field, minimum=0)
    if field in FLAG_FIELDS:
        return _clean_flag(value, field)
    raise RefusedError(f"{field} cannot be changed here.", field=field)


def clean_sender_list(raw: object, field: str) -> str:
    """A sender allow or deny list (text, one a line, or a list) as canonical entries, one a line."""
    if raw is None:
        return ""
    if isinstance(raw, list | tuple):
        raw = "\n".join(str(word) for word in raw)
    if not isinstance(raw, str):
        raise RefusedError(f"{raw!r} is not a list of addresses and domains.", field=field)
    try:
        return "\n".join(parse_sender_list(raw))
    except RuleError as error:
        raise RefusedError(str(error), field=field) from None


def _clean_dnsbl_zones(raw: object) -> str:
    """DNSBL zone names (a list, or text with one a line or comma-separated) as canonical names, one a line."""
    field = "dnsbl_zones"
    if raw is None:
        return ""
    if isinstance(raw, list | tuple):
        words = [str(word) for word in raw]
    elif isinstance(raw, str):
        words = split_zone_list(raw)
    else:
        raise RefusedError(f"{raw!r} is not a list of zone names.", field=field)
    zones: list[str] = []
    for word in words:
        zone = canonical_domain_name(word, field=field)
        labels = zone.split(".")
        if len(labels) < 2 or not all(_DNS_LABEL.match(label) for label in labels):
            raise RefusedError(f"{word!r} is not a DNS zone name (like zen.spamhaus.org).", field=field)
        if zone not in zones:
            zones.append(zone)
    if len(zones) > MAX_DNSBL_ZONES:
        raise RefusedError(f"At most {MAX_DNSBL_ZONES} zones: each one is a lookup per client.", field=field)
    return "\n".join(zones)


def _clean_choice(choices: tuple[str, ...]):
    def clean(value: object, field: str) -> str:
        if value not in choices:
            raise RefusedError(f"Choose {' or '.join(choices)}.", field=field)
        return str(value)

    return clean


def _words(raw: object, field: str, what: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, list | tuple):
        return [str(word).strip() for word in raw if str(word).strip()]
    if isinstance(raw, str):
        return split_words(raw)
    raise RefusedError(f"{raw!r} is not a list of {what}.", field=field)


def _clean_extensions(raw: object, field: str) -> str:
    """File name extensions (".exe" or "exe"), lower case, one a line."""
    extensions: list[str] = []
    for word in _words(raw, field, "file name extensions"):
        extension = word.lstrip(".").lower()
        if not _EXTENSION.match(extension):
            raise RefusedError(f"{word!r} is not a file name extension (like exe).", field=field)
        if extension not in extensions:
            extensions.append(extension)
    return "\n".join(extensions)


def _clean_mime_types(raw: object, field: str) -> str:
    """MIME types ("application/x-msdownload", or "application/*" for a whole top-level type), one a line."""
    types: list[str] = []
    for word in _words(raw, field, "MIME types"):
        mime_type = word.lower()
        if not _MIME_TYPE.match(mime_type):
            raise RefusedError(f"{word!r} is not a MIME type (like application/x-msdownload).", field=field)
        if mime_type not in types:
            types.append(mime_type)
    return "\n".join(types)


def _clean_virus_scanner(raw: object, field: str) -> str:
    text = str(raw or "").strip()
    if text:
        try:
            parse_scanner_address(text)
        except ValueError as exc:
            raise RefusedError(str(exc), field=field) from None
    return text


def _clean_rspamd_url(raw: object, field: str) -> str:
    text = str(raw or "").strip()
    if text:
        try:
            parse_http_url(text)
        except ValueError as exc:
            raise RefusedError(str(exc), field=field) from None
    return text


def _clean_score(raw: object, field: str) -> float | None:
    """A spam score threshold; empty: that step is off."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, bool):
        raise RefusedError(f"{raw!r} is not a number.", field=field)
    try:
        score = float(str(raw).strip())
    except ValueError:
        raise RefusedError(f"{raw!r} is not a number.", field=field) from None
    if not -1000 <= score <= 1000:
        raise RefusedError("A score is between -1000 and 1000.", field=field)
    return score


def _clean_subject_prefix(raw: object, field: str) -> str:
    text = str(raw or "").strip()
    if len(text) > 40 or not all(char.isprintable() for char in text):
        raise RefusedError("At most 40 printable characters.", field=field)
    return text


def _check_spam_thresholds(server: VirtualServer) -> None:
    """Marking comes before filing in Junk, which comes before refusing: each set threshold is at
    least the one before it."""
    previous: tuple[str, float] | None = None
    for field in ("spam_tag_score", "spam_junk_score", "spam_refuse_score"):
        value = getattr(server, field)
        if value is None:
            continue
        if previous is not None and value < previous[1]:
            raise RefusedError(
                f"Must be at least {previous[0]} ({previous[1]:g}): spam is marked, then filed in Junk, then refused.",
                field=field,
            )
        previous = (field, value)


FILTER_CHECKS = {
    "attachment_filter": _clean_choice(("off", "refuse", "strip")),
    "forbidden_extensions": _clean_extensions,
    "forbidden_mime_types": _clean_mime_types,
    "virus_scanner": _clean_virus_scanner,
    "virus_scanner_failure": _clean_choice(("open", "closed")),
    "rspamd_url": _clean_rspamd_url,
    "spam_tag_score": _clean_score,
    "spam_junk_score": _clean_score,
    "spam_refuse_score": _clean_score,
    "spam_subject_prefix": _clean_subject_prefix,
}


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _clean_home_dir(raw: str | Path | None, name: str) -> Path:
    if raw:
        check_home_dir_text(raw)
    try:
        home = Path(raw).expanduser() if raw else default_home_dir(name)
    except RuntimeError:
        raise RefusedError(f"{raw!r} names a home directory of an unknown user.", field="home_dir") from None
    if not home.is_absolute():
        home = settings.VAR_DIR / home
    home = Path(home.resolve())
    if home.exists() and not home.is_dir():
        raise RefusedError(f"{home} exists and is not a directory.", field="home_dir")
    for other in VirtualServer.objects.values_list("name", "home_dir"):
        other_name, other_home = other[0], Path(other[1])
        if _is_within(home, other_home) or _is_within(other_home, home):
            raise RefusedError(
                f"{home} overlaps the home directory of server {other_name!r} ({other_home}).",
                field="home_dir",
            )
    return home


def _addresses_overlap(ip_a: str, ip_b: str) -> bool:
    wildcard = {ALL_UNASSIGNED, "::"}
    return ip_a == ip_b or ip_a in wildcard or ip_b in wildcard


def listening_addresses(unit: SupervisedProcess) -> list[tuple[str, int]]:
    """The (ip, port) pairs a server or service listens on when it runs."""
    pairs = [(unit.ip_address, unit.port)]
    if getattr(unit, "tls_port", None):
        pairs.append((unit.ip_address, unit.tls_port))
    return pairs


def address_conflict(unit: SupervisedProcess) -> SupervisedProcess | None:
    """Another server or service of the same node that would listen on one of the same IP:ports."""
    others: list[SupervisedProcess] = [
        *VirtualServer.objects.on_node(unit.node).select_related("node"),
        *Pop3Service.objects.on_node(unit.node).select_related("node"),
        *ImapService.objects.on_node(unit.node).select_related("node"),
    ]
    for other in others:
        if type(other) is type(unit) and other.pk == unit.pk:
            continue
        if other.effective_desired_state == ServiceState.STOPPED:
            continue
        for ip_address, port in listening_addresses(unit):
            for other_ip, other_port in listening_addresses(other):
                if port == other_port and _addresses_overlap(ip_address, other_ip):
                    return other
    return None


def _check_unique_address(unit: SupervisedProcess) -> None:
    other = address_conflict(unit)
    if other is not None:
        used = ", ".join(f"{ip}:{port}" for ip, port in listening_addresses(other))
        raise RefusedError(
            f"{other} already uses {used} on node {unit.node.name}; stop it or choose another IP address or port.",
            field="port",
        )


def create_home_dirs(home: Path) -> None:
    for sub in HOME_SUBDIRS:
        (home / sub).mkdir(parents=True, exist_ok=True)


@transaction.atomic
def create_virtual_server(
    *,
    name: str,
    default_domain: str,
    ip_address: str | None = None,
    port: int | str = 25,
    home_dir: str | Path | None = None,
    node: Node | None = None,
    start: bool = True,
    auth_requires_tls: bool | None = None,
    actor: str = "system",
) -> VirtualServer:
    """Create a server with the wizard's four answers and its default local domain.

    Unless told otherwise, a server off loopback takes AUTH only after STARTTLS
    (`passwords_need_tls_by_default`).
    """
    node = node or local_node()
    name = _clean_name(name)
    if VirtualServer.objects.filter(node=node, name=name).exists():
        raise RefusedError(f"Node {node.name} already has a server named {name!r}.", field="name")
    domain_name = check_path_name(
        canonical_domain_name(default_domain, field="default_domain"), field="default_domain", what="A domain name"
    )
    ip_address = _clean_ip(ip_address)
    if auth_requires_tls is None:
        auth_requires_tls = passwords_need_tls_by_default(ip_address)
    server = VirtualServer(
        node=node,
        name=name,
        ip_address=ip_address,
        auth_requires_tls=_clean_flag(auth_requires_tls, "auth_requires_tls"),
        port=_clean_port(port),
        home_dir=str(_clean_home_dir(home_dir, name)),
        desired_state=ServiceState.RUNNING if start else ServiceState.STOPPED,
    )

    def add_default_domain(saved: VirtualServer) -> None:
        default = Domain.objects.create(server=saved, name=domain_name, type=DomainType.LOCAL, is_default=True)
        ensure_postmaster(default)

    return _save_new_server(server, start=start, actor=actor, then=add_default_domain)


def _save_new_server(
    server: VirtualServer, *, start: bool, actor: str, then: Callable[[VirtualServer], None] | None = None
) -> VirtualServer:
    """Save a new server (its address free if it starts), run `then` on it, make its home, audit, reconcile."""
    if start:
        _check_unique_address(server)
    try:
        server.save()
    except IntegrityError:
        raise RefusedError("Another server already uses this home directory.", field="home_dir") from None
    if then is not None:
        then(server)
    try:
        create_home_dirs(server.home_path)
    except OSError as exc:
        raise RefusedError(
            f"Cannot create the home directory {server.home_path}: {exc.strerror or exc}", field="home_dir"
        ) from None
    record_change(actor=actor, action="create_virtual_server", obj=server, after=snapshot_of(server))
    request_reconcile(server.node)
    return server


@transaction.atomic
def create_submission_server(
    *,
    name: str,
    ip_address: str | None,
    port: int | str,
    node: Node | None = None,
    home_dir: str | Path | None = None,
    start: bool = True,
    actor: str = "system",
) -> VirtualServer:
    """A submission server (RFC 6409): AUTH before MAIL, relaying for signed-in users only.

    It owns no domain, so no domain's mailboxes move to it: its snapshot spans every domain of its
    node, so mail from a signed-in user to a local mailbox of any server goes to that mailbox's
    Maildir through the same store, and other mail is queued for delivery. Off loopback it takes
    AUTH only after STARTTLS.
    """
    node = node or local_node()
    name = _clean_name(name)
    if VirtualServer.objects.filter(node=node, name=name).exists():
        raise RefusedError(f"Node {node.name} already has a server named {name!r}.", field="name")
    ip_address = _clean_ip(ip_address)
    server = VirtualServer(
        node=node,
        name=name,
        ip_address=ip_address,
        port=_clean_port(port),
        home_dir=str(_clean_home_dir(home_dir, name)),
        allow_anonymous=False,
        is_submission=True,
        auth_requires_tls=passwords_need_tls_by_default(ip_address),
        desired_state=ServiceState.RUNNING if start else ServiceState.STOPPED,
    )
    return _save_new_server(server, start=start, actor=actor)


@transaction.atomic
def update_virtual_server(server: VirtualServer, *, actor: str = "system", **changes) -> VirtualServer:
    """Change a server's settings; the home directory can never change."""
    server = VirtualServer.objects.select_for_update().select_related("node").get(pk=server.pk)
    if "home_dir" in changes:
        check_home_dir_text(changes["home_dir"])
        requested = Path(str(changes["home_dir"])).expanduser()
        if not requested.is_absolute():
            requested = settings.VAR_DIR / requested
        if str(requested.resolve()) != server.home_dir:
            raise RefusedError(
                "The home directory of a virtual server cannot be changed after creation.",
                field="home_dir",
            )
        del changes["home_dir"]
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise RefusedError(f"{field} cannot be changed here.", field=field)
    before = snapshot_of(server)
    for field, value in changes.items():
        setattr(server, field, _clean_setting(field, value))
    _check_spam_thresholds(server)
    if server.tls_port is not None and server.tls_port == server.port:
        raise RefusedError("The implicit-TLS port must differ from the SMTP port.", field="tls_port")
    if "name" in changes and (
        VirtualServer.objects.filter(node=server.node, name=server.name).exclude(pk=server.pk).exists()
    ):
        raise RefusedError(f"Node {server.node.name} already has a server named {server.name!r}.", field="name")
    if server.effective_desired_state != ServiceState.STOPPED:
        _check_unique_address(server)
    if snapshot_of(server) == before:
        return server  # nothing changed: no audit entry, no reload
    server.config_version = F("config_version") + 1
    server.save()
    server.refresh_from_db()
    record_change(actor=actor, action="update_virtual_server", obj=server, before=before, after=snapshot_of(server))
    request_reconcile(server.node)
    return server


def bump_config_version(server: VirtualServer) -> None:
    """Tell the server's running worker that its configuration changed."""
    # The node's submission servers deliver to every server's mailboxes: they hold them too.
    VirtualServer.objects.filter(Q(pk=server.pk) | Q(node_id=server.node_id, is_submission=True)).update(
        config_version=F("config_version") + 1
    )


STATE_VERBS = {ServiceState.RUNNING: "start", ServiceState.PAUSED: "pause", ServiceState.STOPPED: "stop"}
# The audit log's name for each kind of supervised unit ("pause_imap_service").
AUDIT_NOUNS = {"smtp": "virtual_server", "pop3": "pop3_service", "imap": "imap_service"}


@transaction.atomic
def set_desired_state(unit: SupervisedProcess, desired: str, *, actor: str = "system") -> SupervisedProcess:
    """Record the state an administrator wants for a server or service; the node's reconcile applies it."""
    desired = ServiceState(desired)
    unit = type(unit).objects.select_for_update().select_related("node").get(pk=unit.pk)
    if unit.desired_state == desired:
        return unit
    before = {"desired_state": unit.desired_state}
    unit.desired_state = desired
    if desired != ServiceState.STOPPED:
        _check_unique_address(unit)
        # An explicit start clears a back-off left by earlier failures.
        unit.next_start_at = None
        unit.consecutive_failures = 0
    unit.save(update_fields=["desired_state", "next_start_at", "consecutive_failures"])
    noun = AUDIT_NOUNS[unit.process_kind]
    record_change(
        actor=actor,
        action=f"{STATE_VERBS[desired]}_{noun}",
        obj=unit,
        before=before,
        after={"desired_state": desired.value},
    )
    request_reconcile(unit.node)
    return unit


def set_server_state(server: VirtualServer, desired: str, *, actor: str = "system") -> VirtualServer:
    """Start, pause or stop one virtual server."""
    return set_desired_state(server, desired, actor=actor)


def start_server(server: VirtualServer, *, actor: str = "system") -> VirtualServer:
    return set_server_state(server, ServiceState.RUNNING, actor=actor)


def pause_server(server: VirtualServer, *, actor: str = "system") -> VirtualServer:
    return set_server_state(server, ServiceState.PAUSED, actor=actor)


def stop_server(server: VirtualServer, *, actor: str = "system") -> VirtualServer:
    return set_server_state(server, ServiceState.STOPPED, actor=actor)


@transaction.atomic
def delete_virtual_server(server: VirtualServer, *, actor: str = "system") -> None:
    """Delete a server's configuration; its worker is stopped, its home directory is kept on disk."""
    server = VirtualServer.objects.select_related("node").get(pk=server.pk)
    record_change(actor=actor, action="delete_virtual_server", obj=server, before=snapshot_of(server))
    node = server.node
    orphan = ("smtp", server.pk, server.pid)
    if Mailbox.objects.filter(domain__server=server).exists():
        raise RefusedError("The server still has mailboxes; delete them (or their domains) first.", field="name")
    Domain.objects.filter(server=server, type=DomainType.ALIAS).delete()
    server.delete()
    if orphan[2]:
        from servers.tasks import terminate_worker

        transaction.on_commit(lambda: terminate_worker.apply_async(args=orphan, queue=node.name, retry=False))


@transaction.atomic
def set_server_certificate(server: VirtualServer, cert_pem: bytes, key_pem: bytes, *, actor: str = "system") -> None:
    """Install an administrator's PEM certificate and key (instead of the generated self-signed pair)."""
    with tempfile.TemporaryDirectory() as scratch:
        cert_file, key_file = Path(scratch, "cert.pem"), Path(scratch, "key.pem")
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_file, key_file)
        except (ssl.SSLError, ValueError) as exc:
            raise RefusedError(
                f"The certificate and key do not make a usable pair: {exc}", field="certificate"
            ) from None
    server.cert_path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(server.home_path / ".tmp", server.cert_path.parent, server.key_path.name, [key_pem])
    server.key_path.chmod(0o600)
    write_durably(server.home_path / ".tmp", server.cert_path.parent, server.cert_path.name, [cert_pem])
    record_change(actor=actor, action="set_server_certificate", obj=server)
    bump_config_version(server)
    request_reconcile(server.node)
