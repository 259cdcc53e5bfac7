"""Who may see and change what: the one answer the console and the REST API both ask.

(The SMTP server's connection-control lists — which clients may connect or relay — are another
matter: `client_rules.py` next door.)

The rules, decided once:

- An **administrator** (a superuser) sees and changes everything; only an administrator creates
  or deletes a virtual server, chooses a server's operators, and runs the node's services (nodes,
  and the node's POP3 and IMAP services: their settings, state and sessions, which span every
  server's mailboxes).
- A **server operator** (`VirtualServer.operators`) sees and changes their servers and everything
  in them: settings and state, domains (add, remove, default, type, lock, route, quota ceiling,
  domain administrators), mailboxes, group addresses, access and relay lists, the queue, current
  sessions and the Delivery tab.
- A **domain administrator** (`Domain.administrators`) sees their domains and manages those
  domains' mailboxes and group addresses (add, change, lock, password, delete, import, export;
  quotas up to the domain's ceiling). They do not change the domain itself — in particular they
  may not lock or unlock it: the domain lock is the hosting provider's switch to suspend a
  customer's domain, and a customer who could undo it would make it useless. A domain
  administrator locks mailboxes one by one instead. They do not see the server.
- A domain's **DKIM keys** are managed (generated, rotated, their record shown) by whoever sees the
  domain: its domain administrators as well as the server's operators. The record goes into the
  customer's own DNS zone, and rotating only changes how the domain's own mail is signed. Removing
  retired keys is the command line's (`smtpsvc dkim DOMAIN remove-retired`). No face ever shows a
  private key.
- A domain's **DNS readiness** (are its MX, PTR, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, autoconfig and
  SRV records published, and what to publish) is shown to the same people as its DKIM record:
  whoever sees the domain.
- Everyone signed in sees the sign-ins (logons) of the mailboxes they see, and the audit entries of
  the changes they made themselves (an administrator sees every entry).
- A group address shows a user only the members they can see; an edit replaces those, and keeps
  the members the editor cannot see (another domain's mailboxes on the same server).
- The operators of a server and the administrators of a domain are shown to whoever sees it.
- A mailbox blocked from sending by an outbound limit is released (its held mail let go or deleted)
  by whoever sees the mailbox: administrators, the server's operators and the domain's
  administrators (a compromised account is the domain's customer's emergency too). Its own
  outbound limits, and a domain's sender allow and deny lists, are changed by operators only
  (`acts_only_as_domain_administrator` refuses a domain administrator): raising a limit or
  allowing a sender loosens the server's protection for everyone on it. The mailbox's user sees
  only their own state (the webmail's refusal says why and that the mail is held).
- A role (server operator, domain administrator) is given only to an active user who is not an
  administrator: an administrator manages everything already and needs no role, and an inactive
  account cannot sign in. The console offers only `role_candidates()`; the role services refuse
  anyone else with `role_refusal`'s sentence, on the field that named them.

How a refusal reads, on every face: an object the user may not see does not exist for them
(`NotVisible`, a 404); an object they see but may not change this way is a `NotAllowed` (403).
The role-scoped managers (`Domain.objects.for_user`, …) stay the query primitives; views and API
permission classes ask the functions here, never the managers or `is_superuser` directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404

from servers.delivery.models import QueuedMessage
from servers.models import (
    AuditEntry,
    ClientRule,
    Domain,
    GroupAddress,
    ImapService,
    Logon,
    Mailbox,
    Node,
    VirtualServer,
)


class NotVisible(Http404):
    """The object does not exist for this user (404 on every face)."""


class NotAllowed(PermissionDenied):
    """The user sees the object but may not do this to it (403 on every face)."""


# -- roles ----------------------------------------------------------------------------------------


def is_administrator(user) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_superuser)


def operates(user, server: VirtualServer | int) -> bool:
    """The user manages this server and everything in it: an administrator, or one of its operators."""
    server_id = server if isinstance(server, int) else server.pk
    return servers_visible_to(user).filter(pk=server_id).exists()


def operates_any_server(user) -> bool:
    return servers_visible_to(user).exists()


def role_candidates() -> QuerySet:
    """The users who may be given a role: active accounts that are not administrators."""
    user_model = get_user_model()
    return user_model.objects.filter(is_active=True, is_superuser=False).order_by(user_model.USERNAME_FIELD)


def role_refusal(user) -> str | None:
    """Why `user` may not be made a server operator or a domain administrator, or None if they may."""
    name = user.get_username()
    if user.is_superuser:
        return f"{name} is an administrator, who manages everything already and needs no role."
    if not user.is_active:
        return f"{name} is an inactive account: activate it before giving it a role."
    return None


def acts_only_as_domain_administrator(user, domain: Domain) -> bool:
    """Whether `user` manages `domain` only as its delegated administrator (held to its quota ceiling).

    `None` is the system itself: the command line, tasks.
    """
    if user is None:
        return False
    return not operates(user, domain.server_id)


# -- nodes and servers ----------------------------------------------------------------------------


def can_manage_nodes(user) -> bool:
    """Start, pause and stop a node's SMTP, POP3 and IMAP services; see the nodes."""
    return is_administrator(user)


def nodes_visible_to(user) -> QuerySet[Node]:
    return Node.objects.all() if can_manage_nodes(user) else Node.objects.none()


def imap_services_visible_to(user) -> QuerySet[ImapService]:
    """The nodes' IMAP services: whoever runs the nodes sees (and so changes) them, their state and sessions."""
    return ImapService.objects.all() if can_manage_nodes(user) else ImapService.objects.none()


def access_imap_service(user, service_id: int) -> ImapService:
    """The IMAP service, if the user sees it (and so may change it), else NotVisible."""
    service = imap_services_visible_to(user).select_related("node").filter(pk=service_id).first()
    if service is None:
        raise NotVisible("No such IMAP service.")
    return service


def servers_visible_to(user) -> QuerySet[VirtualServer]:
    return VirtualServer.objects.for_user(user)


def access_server(user, server_id: int) -> VirtualServer:
    """The server, if the user sees it (and so may change its settings and state), else NotVisible."""
    server = servers_visible_to(user).select_related("node").filter(pk=server_id).first()
    if server is None:
        raise NotVisible("No such virtual server.")
    return server


def can_create_server(user) -> bool:
    return is_administrator(user)


def can_delete_server(user, server: VirtualServer) -> bool:
    return is_administrator(user)


def can_change_operators(user, server: VirtualServer) -> bool:
    return is_administrator(user)


def check_can_delete_server(user, server: VirtualServer) -> None:
    if not can_delete_server(user, server):
        raise NotAllowed("Only an administrator can create or delete a virtual server.")


def check_can_change_operators(user, server: VirtualServer) -> None:
    if not can_change_operators(user, server):
        raise NotAllowed("Only an administrator can change the operators of a server.")


def client_rules_visible_to(user, model: type[ClientRule]) -> QuerySet:
    """Connection-control or relay entries (`model`) of the servers the user operates."""
    return model.objects.filter(server__in=servers_visible_to(user)).select_related("server")


def queued_messages_visible_to(user) -> QuerySet[QueuedMessage]:
    return QueuedMessage.objects.filter(server__in=servers_visible_to(user)).select_related("server__node")


# -- domains --------------------------------------------------------------------------------------


def domains_visible_to(user) -> QuerySet[Domain]:
    return Domain.objects.for_user(user)


def can_add_domain(user, server: VirtualServer | None = None) -> bool:
    """Add a domain to `server` (or, without one, to some server): its operators."""
    return operates(user, server) if server is not None else operates_any_server(user)


def can_change_domain(user, domain: Domain) -> bool:
    """Remove it, make it the default, change its type, route, quota ceiling or administrators: operators."""
    return operates(user, domain.server_id)


def can_lock_domain(user, domain: Domain) -> bool:
    """Lock or unlock the whole domain: operators, not its domain administrators (see the module's docstring)."""
    return can_change_domain(user, domain)


def can_manage_dkim_keys(user, domain: Domain) -> bool:
    """Generate or rotate the domain's DKIM key and see its record: whoever sees the domain."""
    return domains_visible_to(user).filter(pk=domain.pk).exists()


def can_check_dns_readiness(user, domain: Domain) -> bool:
    """See the domain's DNS readiness (its records as DNS answers them): whoever sees the domain, as DKIM."""
    return can_manage_dkim_keys(user, domain)


def access_domain(user, domain_id: int, *, for_change: bool = False) -> Domain:
    """The domain if the user sees it (NotVisible otherwise); `for_change`: and may change the domain itself."""
    domain = domains_visible_to(user).select_related("server__node", "alias_of").filter(pk=domain_id).first()
    if domain is None:
        raise NotVisible("No such domain.")
    if for_change and not can_change_domain(user, domain):
        raise NotAllowed("Only an operator of the domain's server can change the domain.")
    return domain


# -- mailboxes and group addresses ----------------------------------------------------------------


def mailboxes_visible_to(user) -> QuerySet[Mailbox]:
    return Mailbox.objects.for_user(user)


def can_release_sending(user, mailbox: Mailbox) -> bool:
    """Release a mailbox blocked by an outbound limit: whoever sees it (see the module's docstring)."""
    return mailboxes_visible_to(user).filter(pk=mailbox.pk).exists()


def access_mailbox(user, mailbox_id: int) -> Mailbox:
    """The mailbox, if the user sees it (and so may change it), else NotVisible."""
    mailbox = mailboxes_visible_to(user).select_related("domain__server").filter(pk=mailbox_id).first()
    if mailbox is None:
        raise NotVisible("No such mailbox.")
    return mailbox


def groups_visible_to(user) -> QuerySet[GroupAddress]:
    return GroupAddress.objects.for_user(user)


def access_group(user, group_id: int) -> GroupAddress:
    """The group address, if the user sees it (and so may change it), else NotVisible."""
    group = groups_visible_to(user).select_related("domain__server").filter(pk=group_id).first()
    if group is None:
        raise NotVisible("No such group address.")
    return group


def visible_members(user, group: GroupAddress) -> QuerySet[Mailbox]:
    """The members of `group` the user may see."""
    # Asked of the database, not of `group.members`, which a view may have prefetched already filtered.
    return mailboxes_visible_to(user).filter(groups=group)


def member_candidates(user, group: GroupAddress) -> QuerySet[Mailbox]:
    """Mailboxes the user may make members: the ones they see on the group's server."""
    return mailboxes_visible_to(user).filter(domain__server_id=group.domain.server_id)


def keep_invisible_members_on_edit(user, group: GroupAddress, chosen: Iterable[Mailbox]) -> list[Mailbox]:
    """The members after `user` chose `chosen`: members the user cannot see stay as they are."""
    hidden = Mailbox.objects.filter(groups=group).exclude(pk__in=mailboxes_visible_to(user).values("pk"))
    return [*chosen, *hidden]


# -- logs -----------------------------------------------------------------------------------------


def logons_visible_to(user) -> QuerySet[Logon]:
    return Logon.objects.filter(mailbox__in=mailboxes_visible_to(user)).select_related("mailbox__domain")


def audit_entries_visible_to(user) -> QuerySet[AuditEntry]:
    """Every entry for an administrator; anyone else the changes they made themselves."""
    if is_administrator(user):
        return AuditEntry.objects.all()
    if user is None or not user.is_authenticated:
        return AuditEntry.objects.none()
    return AuditEntry.objects.filter(actor=user.get_username())
