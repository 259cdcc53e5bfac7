"""Mailboxes, group addresses and locks: the `winpop` verbs, for every face."""

from __future__ import annotations

import collections
import functools
import hashlib
import hmac
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth.hashers import check_password, make_password
from django.db import IntegrityError, transaction
from django.utils import timezone

from servers import maildir
from servers.models import Domain, DomainType, GroupAddress, Logon, Mailbox
from servers.storage import UnsafePathError

from .audit import record_change, snapshot_of
from .errors import MissingInputError, RefusedError
from .names import canonical_domain_name, check_path_name
from .nodes import request_reconcile
from .permissions import acts_only_as_domain_administrator
from .postmaster import POSTMASTER
from .virtual_servers import bump_config_version

log = logging.getLogger("mailconsole.services")

MIN_PASSWORD_LENGTH = 8
# RFC 5321 dot-atom local parts, kept to what mail clients type: letters, digits and . _ + -
LOCAL_PART_RE = re.compile(r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
MAILBOX_AUDIT_FIELDS = [
    "local_part",
    "display_name",
    "quota_bytes",
    "quota_messages",
    "is_locked",
    "is_catch_all",
    "outbound_max_messages_per_hour",
    "outbound_max_messages_per_day",
    "outbound_max_new_recipients_per_day",
]


def password_policy_errors(password: str) -> list[str]:
    """What a password lacks under the lab's rule: 8+ characters, upper and lower case, digits."""
    errors = []
    if len(password) < MIN_PASSWORD_LENGTH:
        errors.append(f"The password must be at least {MIN_PASSWORD_LENGTH} characters long.")
    if not any(c.isupper() for c in password):
        errors.append("The password must contain an upper-case letter.")
    if not any(c.islower() for c in password):
        errors.append("The password must contain a lower-case letter.")
    if not any(c.isdigit() for c in password):
        errors.append("The password must contain a digit.")
    return errors


def check_password_policy(password: str) -> None:
    errors = password_policy_errors(password or "")
    if errors:
        raise RefusedError(" ".join(errors), field="password")


def canonical_local_part(raw: str, *, field: str = "local_part") -> str:
    local_part = (raw or "").strip().lower()
    if not local_part:
        raise RefusedError("Enter a mailbox name.", field=field)
    if len(local_part) > 64 or not LOCAL_PART_RE.match(local_part):
        raise RefusedError(f"{raw!r} is not a valid mailbox name (letters, digits, . _ + -).", field=field)
    return local_part


def new_local_part(raw: str, *, field: str = "local_part") -> str:
    """The canonical local part of a new mailbox or group; it may not name any folder but its own."""
    return check_path_name(canonical_local_part(raw, field=field), field=field, what="A mailbox name")


def split_address(address: str, *, field: str = "address") -> tuple[str, str]:
    local_part, at, domain = (address or "").strip().rpartition("@")
    if not at:
        raise RefusedError(f"{address!r} is not a mail address (user@domain).", field=field)
    return canonical_local_part(local_part, field=field), canonical_domain_name(domain, field=field)


def find_local_domain(name: str, *, field: str = "domain") -> Domain:
    """The local domain called `name`, on whichever server of the installation holds it."""
    canonical = canonical_domain_name(name, field=field)
    domains = list(Domain.objects.filter(name=canonical).select_related("server__node"))
    if not domains:
        raise RefusedError(f"There is no domain {canonical}.", field=field)
    local = [d for d in domains if d.type == DomainType.LOCAL]
    if not local:
        raise RefusedError(f"{canonical} is not a local domain; mailboxes live in local domains.", field=field)
    return local[0]


def find_mailbox(address: str, *, field: str = "address") -> Mailbox:
    local_part, domain = split_address(address, field=field)
    mailbox = (
        Mailbox.objects.filter(local_part=local_part, domain__name=domain)
        .select_related("domain__server__node")
        .first()
    )
    if mailbox is None:
        raise RefusedError(f"There is no mailbox {local_part}@{domain}.", field=field)
    return mailbox


def _changed(domain: Domain) -> None:
    """Workers hold mailboxes in their snapshot: tell them."""
    bump_config_version(domain.server)
    request_reconcile(domain.server.node)


def _check_address_free(domain: Domain, local_part: str) -> None:
    if Mailbox.objects.filter(domain=domain, local_part=local_part).exists():
        raise RefusedError(f"{local_part}@{domain.name} is already a mailbox.", field="local_part")
    if GroupAddress.objects.filter(domain=domain, local_part=local_part).exists():
        raise RefusedError(f"{local_part}@{domain.name} is already a group address.", field="local_part")


MB = 1024 * 1024


def check_quota_ceiling(domain: Domain, quota_bytes: int | None, acting_user) -> None:
    """A domain administrator stays under the domain's ceiling, and cannot make a quota unlimited."""
    ceiling_mb = domain.max_mailbox_quota_mb
    if ceiling_mb is None or not acts_only_as_domain_administrator(acting_user, domain):
        return
    if quota_bytes is None:
        raise MissingInputError(
            f"Give a quota: mailboxes of {domain.name} may have at most {ceiling_mb} MB "
            f"({ceiling_mb * MB} bytes), never unlimited.",
            field="quota_bytes",
        )
    if quota_bytes > ceiling_mb * MB:
        raise RefusedError(
            f"The quota can be at most {ceiling_mb} MB ({ceiling_mb * MB} bytes) in {domain.name}.", field="quota_bytes"
        )


def _clean_quota(value: int | str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        quota = int(value)
    except (TypeError, ValueError):
        raise RefusedError(f"{value!r} is not a number.", field=field) from None
    if quota < 0:
        raise RefusedError("A quota cannot be negative.", field=field)
    if quota > 2**62:
        raise RefusedError("The quota is too large.", field=field)
    return quota or None


@transaction.atomic
def add_mailbox(
    domain: Domain,
    local_part: str,
    password: str,
    *,
    display_name: str = "",
    quota_bytes: int | None = None,
    quota_messages: int | None = None,
    actor: str = "system",
    acting_user=None,
) -> Mailbox:
    """Create a mailbox in a local domain, with its Maildir on disk.

    `acting_user` is the signed-in user of the console or the API; a domain administrator is held to
    the domain's quota ceiling.
    """
    domain = Domain.objects.select_related("server__node").get(pk=domain.pk)
    if domain.type != DomainType.LOCAL:
        raise RefusedError(f"{domain.name} is not a local domain; mailboxes live in local domains.", field="domain")
    local_part = new_local_part(local_part)
    _check_address_free(domain, local_part)
    quota_bytes = _clean_quota(quota_bytes, "quota_bytes")
    check_quota_ceiling(domain, quota_bytes, acting_user)
    check_password_policy(password)
    mailbox = Mailbox(
        domain=domain,
        local_part=local_part,
        display_name=(display_name or "").strip()[:200],
        password=make_password(password),
        quota_bytes=quota_bytes,
        quota_messages=_clean_quota(quota_messages, "quota_messages"),
    )
    mailbox.save()
    try:
        maildir.ensure_maildir(own_maildir(mailbox))
    except UnsafePathError as error:
        raise RefusedError(
            f"No folder can be made for {mailbox.address}: {error.strerror}.", field="local_part"
        ) from None
    record_change(actor=actor, action="add_mailbox", obj=mailbox, after=snapshot_of(mailbox, MAILBOX_AUDIT_FIELDS))
    _changed(domain)
    return mailbox


@transaction.atomic
def delete_mailbox(mailbox: Mailbox, *, remove_mail: bool = False, actor: str = "system") -> str | None:
    """Delete a mailbox; its stored mail stays on disk unless `remove_mail`.

    Returns why the mail was kept although `remove_mail` asked otherwise (a legacy name whose folder
    could be another mailbox's), else None.
    """
    mailbox = Mailbox.objects.select_related("domain__server__node").get(pk=mailbox.pk)
    after: dict[str, object] = {"remove_mail": remove_mail}
    path = None
    mail_kept: str | None = None
    if remove_mail:
        try:
            path = maildir.check_maildir(own_maildir(mailbox))
        except UnsafePathError as error:
            # A name from before names were checked: its folder may be another mailbox's; touch nothing.
            log.warning("mailbox %s deleted, its mail left on disk: %s", mailbox.address, error)
            after["mail_kept"] = mail_kept = str(error)
    record_change(
        actor=actor,
        action="delete_mailbox",
        obj=mailbox,
        before=snapshot_of(mailbox, MAILBOX_AUDIT_FIELDS),
        after=after,
    )
    domain = mailbox.domain
    mailbox.delete()
    if path is not None:
        transaction.on_commit(lambda: _remove_maildir(path))
    _changed(domain)
    return mail_kept


def own_maildir(mailbox: Mailbox) -> Path:
    """The mailbox's Maildir; UnsafePathError if its names would make it any folder but its own."""
    return maildir.mailbox_maildir(mailbox.domain.server.home_dir, mailbox.domain.name, mailbox.local_part)


def _remove_maildir(path: Path) -> None:
    # rmtree never follows a link inside the tree, and refuses to start at one.
    shutil.rmtree(path, ignore_errors=True)


@transaction.atomic
def change_password(mailbox: Mailbox, new_password: str, *, actor: str = "system") -> Mailbox:
    check_password_policy(new_password)
    mailbox = Mailbox.objects.select_related("domain__server__node").select_for_update().get(pk=mailbox.pk)
    mailbox.password = make_password(new_password)
    mailbox.save(update_fields=["password"])
    record_change(actor=actor, action="change_password", obj=mailbox)
    return mailbox


@transaction.atomic
def set_mailbox_lock(mailbox: Mailbox, locked: bool, *, actor: str = "system") -> Mailbox:
    """winpop lock/unlock USER@DOMAIN: a locked mailbox receives mail but cannot log in."""
    mailbox = Mailbox.objects.select_related("domain__server__node").get(pk=mailbox.pk)
    if mailbox.is_locked != locked:
        Mailbox.objects.filter(pk=mailbox.pk).update(is_locked=locked)
        mailbox.is_locked = locked
        record_change(
            actor=actor,
            action="lock_mailbox" if locked else "unlock_mailbox",
            obj=mailbox,
            before={"is_locked": not locked},
            after={"is_locked": locked},
        )
    return mailbox


@transaction.atomic
def set_domain_lock(domain: Domain, locked: bool, *, actor: str = "system") -> Domain:
    """winpop lock/unlock DOMAIN: no mailbox of the domain can log in; mail still arrives."""
    domain = Domain.objects.select_related("server__node").get(pk=domain.pk)
    if domain.is_locked != locked:
        Domain.objects.filter(pk=domain.pk).update(is_locked=locked)
        domain.is_locked = locked
        record_change(
            actor=actor,
            action="lock_domain" if locked else "unlock_domain",
            obj=domain,
            before={"is_locked": not locked},
            after={"is_locked": locked},
        )
    return domain


# The server's outbound abuse limits, overridden for one mailbox (None: the server's; 0: none for it).
OUTBOUND_LIMIT_FIELDS = (
    "outbound_max_messages_per_hour",
    "outbound_max_messages_per_day",
    "outbound_max_new_recipients_per_day",
)


def _clean_outbound_limit(value: object, field: str) -> int:
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise RefusedError(f"{value!r} is not a whole number.", field=field) from None
    if not 0 <= number <= 2**31 - 1:
        raise RefusedError("Enter 0 (no limit) or a positive number.", field=field)
    return number


@transaction.atomic
def update_mailbox(mailbox: Mailbox, *, actor: str = "system", acting_user=None, **changes) -> Mailbox:
    """Change display name, quotas, outbound limits or the catch-all flag (a domain administrator under the
    quota ceiling, and not the outbound limits)."""
    mailbox = Mailbox.objects.select_related("domain__server__node").select_for_update().get(pk=mailbox.pk)
    before = snapshot_of(mailbox, MAILBOX_AUDIT_FIELDS)
    for field, value in changes.items():
        if field == "display_name":
            mailbox.display_name = (value or "").strip()[:200]
        elif field == "quota_bytes":
            quota_bytes = _clean_quota(value, field)
            if quota_bytes != mailbox.quota_bytes:  # keeping what an administrator set is no change
                check_quota_ceiling(mailbox.domain, quota_bytes, acting_user)
            mailbox.quota_bytes = quota_bytes
        elif field == "quota_messages":
            mailbox.quota_messages = _clean_quota(value, field)
        elif field in OUTBOUND_LIMIT_FIELDS:
            limit = None if value in (None, "") else _clean_outbound_limit(value, field)
            if limit != getattr(mailbox, field) and acts_only_as_domain_administrator(acting_user, mailbox.domain):
                raise RefusedError(
                    "Only an administrator or an operator of the server can change a mailbox's outbound limits.",
                    field=field,
                )
            setattr(mailbox, field, limit)
        elif field == "is_catch_all":
            if value:
                Mailbox.objects.filter(domain=mailbox.domain, is_catch_all=True).exclude(pk=mailbox.pk).update(
                    is_catch_all=False
                )
            mailbox.is_catch_all = bool(value)
        else:
            raise RefusedError(f"{field} cannot be changed here.", field=field)
    mailbox.save()
    record_change(
        actor=actor,
        action="update_mailbox",
        obj=mailbox,
        before=before,
        after=snapshot_of(mailbox, MAILBOX_AUDIT_FIELDS),
    )
    _changed(mailbox.domain)
    return mailbox


def set_catch_all(mailbox: Mailbox, enabled: bool = True, *, actor: str = "system") -> Mailbox:
    """Make a mailbox receive the mail for every unknown address of its domain."""
    return update_mailbox(mailbox, is_catch_all=enabled, actor=actor)


@transaction.atomic
def add_group(
    domain: Domain, local_part: str, members: Iterable[Mailbox] = (), *, actor: str = "system"
) -> GroupAddress:
    """One address delivering to several mailboxes of the same server."""
    domain = Domain.objects.select_related("server__node").get(pk=domain.pk)
    if domain.type != DomainType.LOCAL:
        raise RefusedError(f"{domain.name} is not a local domain.", field="domain")
    local_part = new_local_part(local_part)
    _check_address_free(domain, local_part)
    try:
        group = GroupAddress.objects.create(domain=domain, local_part=local_part)
    except IntegrityError:
        raise RefusedError(f"{local_part}@{domain.name} already exists.", field="local_part") from None
    _set_members(group, members)
    record_change(
        actor=actor, action="add_group", obj=group, after={"members": [m.address for m in group.members.all()]}
    )
    _changed(domain)
    return group


def _set_members(group: GroupAddress, members: Iterable[Mailbox]) -> None:
    members = list(members)
    for member in members:
        if member.domain.server_id != group.domain.server_id:
            raise RefusedError(f"{member.address} is on another server.", field="members")
    group.members.set(members)


@transaction.atomic
def set_group_members(group: GroupAddress, members: Iterable[Mailbox], *, actor: str = "system") -> GroupAddress:
    group = GroupAddress.objects.select_related("domain__server__node").get(pk=group.pk)
    before = [m.address for m in group.members.all()]
    _set_members(group, members)
    record_change(
        actor=actor,
        action="set_group_members",
        obj=group,
        before={"members": before},
        after={"members": [m.address for m in group.members.all()]},
    )
    _changed(group.domain)
    return group


@transaction.atomic
def remove_group(group: GroupAddress, *, actor: str = "system") -> None:
    group = GroupAddress.objects.select_related("domain__server__node").get(pk=group.pk)
    if group.local_part == POSTMASTER:
        raise RefusedError("Every local domain keeps its postmaster address (RFC 5321).", field="local_part")
    record_change(actor=actor, action="remove_group", obj=group)
    domain = group.domain
    group.delete()
    _changed(domain)


# -- sign-in, for POP3 and webmail ------------------------------------------------------------


class LoginRefusedError(Exception):
    """Why a sign-in failed: 'credentials' (same for unknown user and bad password) or 'locked'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedIn:
    mailbox_id: int
    address: str
    maildir: str
    quota_bytes: int | None = None
    quota_messages: int | None = None


# Argon2 as Django configures it takes about 100 MiB and a core for 0.2 s per check. Checks beyond
# the core count would only wait for a CPU while holding their memory: ten at once took a POP3
# worker to 860 MiB. So at most this many run at a time in a process; the rest queue.
_password_checks = threading.BoundedSemaphore(max(os.cpu_count() or 1, 1))


def _check_password(password: str, stored_hash: str) -> bool:
    with _password_checks:
        return check_password(password, stored_hash)


@functools.cache
def _dummy_hash() -> str:
    """Compared against when the user does not exist, so both failures take the same time."""
    return make_password("not-a-real-password-0")


class VerifiedCredentials:
    """A worker's memory of passwords it already verified (like Dovecot's auth cache).

    An entry is keyed by the mailbox and its stored hash, so a password change misses at once; it
    holds an HMAC of the password under a key that never leaves this process, never the password.
    Locks are read from the database on every sign-in, so a lock also takes effect at once.
    """

    def __init__(self, *, max_entries: int = 10_000, lifetime_s: float = 900) -> None:
        self._key = secrets.token_bytes(32)
        self._entries: collections.OrderedDict[tuple[int, str], tuple[bytes, float]] = collections.OrderedDict()
        self._max_entries = max_entries
        self._lifetime_s = lifetime_s
        self._lock = threading.Lock()

    def _digest(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    def matches(self, mailbox_id: int, stored_hash: str, password: str) -> bool:
        with self._lock:
            entry = self._entries.get((mailbox_id, stored_hash))
        if entry is None or time.monotonic() - entry[1] > self._lifetime_s:
            return False
        return hmac.compare_digest(entry[0], self._digest(password))

    def remember(self, mailbox_id: int, stored_hash: str, password: str) -> None:
        with self._lock:
            self._entries[(mailbox_id, stored_hash)] = (self._digest(password), time.monotonic())
            self._entries.move_to_end((mailbox_id, stored_hash))
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)


def authenticate_mailbox(address: str, password: str, *, cache: VerifiedCredentials | None = None) -> SignedIn:
    """Check a mailbox's credentials; raise LoginRefusedError with the same reason for any bad pair."""
    try:
        local_part, domain = split_address(address)
    except RefusedError:
        _check_password(password, _dummy_hash())
        raise LoginRefusedError("credentials") from None
    mailbox = (
        Mailbox.objects.filter(local_part=local_part, domain__name=domain, domain__type=DomainType.LOCAL)
        .select_related("domain__server")
        .first()
    )
    if mailbox is None:
        _check_password(password, _dummy_hash())
        raise LoginRefusedError("credentials")
    if cache is None or not cache.matches(mailbox.pk, mailbox.password, password):
        if not _check_password(password, mailbox.password):
            raise LoginRefusedError("credentials")
        if cache is not None:
            cache.remember(mailbox.pk, mailbox.password, password)
    if mailbox.is_locked or mailbox.domain.is_locked:
        raise LoginRefusedError("locked")
    try:
        path = own_maildir(mailbox)
    except UnsafePathError as error:
        log.warning("mailbox %s cannot sign in: %s", mailbox.address, error)
        raise LoginRefusedError("locked") from None
    return SignedIn(
        mailbox_id=mailbox.pk,
        address=mailbox.address,
        maildir=str(path),
        quota_bytes=mailbox.quota_bytes,
        quota_messages=mailbox.quota_messages,
    )


def record_logon(mailbox_id: int, client_address: str, protocol: str = "POP3") -> int:
    """Note a successful sign-in (Exchange's Logons view, the mailbox's last logon columns)."""
    now = timezone.now()
    with transaction.atomic():  # one write transaction, not two: sign-ins queue on it under SQLite
        Mailbox.objects.filter(pk=mailbox_id).update(last_logon_at=now, last_logon_from=client_address)
        logon = Logon.objects.create(
            mailbox_id=mailbox_id, protocol=protocol, client_address=client_address, logon_at=now, last_access_at=now
        )
    return logon.pk


def touch_logon(logon_id: int) -> None:
    Logon.objects.filter(pk=logon_id).update(last_access_at=timezone.now())


# -- statistics ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MailboxUsage:
    size_bytes: int
    message_count: int


def mailbox_usage(mailbox: Mailbox) -> MailboxUsage:
    """Size and item count of a mailbox as stored (Exchange's Size and Total Items columns)."""
    size_bytes, message_count = maildir.mailbox_usage(mailbox.maildir)
    return MailboxUsage(size_bytes=size_bytes, message_count=message_count)
