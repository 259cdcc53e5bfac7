"""The sender rules of an SMTP session: sender checks, sender lists and outbound limits.

A mixin of `servers.smtp.LocalDeliveryHandler`, kept apart so the adapter stays readable: each
method asks the I/O it needs (`servers.sender_checks` for DNS, `servers.outbound_counters` for
Redis, `servers.services.outbound_limits` in a thread for the database) and one pure function of
`servers.smtp_policy` for the decision, counts and logs a refusal with its reason
(`WorkerCounters.count_refusal`) and returns the reply, or None to go on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from servers.smtp_policy import (
    antispam_exempt,
    any_domain_allows_sender,
    domain_allows_sender,
    domain_sender_refusal,
    effective_outbound_limits,
    outbound_limit_exceeded,
    ptr_sender_refusal,
    sender_allowed,
    sender_deny_refusal,
    sender_domain,
    sender_domain_refusal,
    sending_blocked_refusal,
)

if TYPE_CHECKING:
    from servers.outbound_counters import OutboundCounters
    from servers.sender_checks import SenderChecks
    from servers.smtp import LocalEnvelope, MailConsoleSMTP, WorkerCounters
    from servers.snapshot import ServerSnapshot


class SenderRules:
    """The sender rules' steps at MAIL, RCPT and DATA (mixed into LocalDeliveryHandler)."""

    _snapshot: Callable[[], ServerSnapshot]
    counters: WorkerCounters
    sender_checks: SenderChecks | None
    outbound: OutboundCounters | None

    if TYPE_CHECKING:  # LocalDeliveryHandler's

        async def _dnsbl_refusal(self, protocol: MailConsoleSMTP) -> str | None: ...

    async def _mail_antispam_refusal(
        self, protocol: MailConsoleSMTP, envelope: LocalEnvelope, sender: str
    ) -> str | None:
        """The MAIL-stage anti-spam checks (DNSBL, sender domain, PTR), skipped for an allowed sender.

        When a local domain's allow list has the sender, a refusal waits for RCPT
        (`envelope.deferred_refusal`) and applies only to the other domains' recipients.
        """
        snapshot = self._snapshot()
        envelope.deferred_refusal = None
        if sender_allowed(snapshot.policy, sender):
            protocol.dnsbl_listed = None
            return None
        found = await self._dnsbl_refusal(protocol)
        refusal = ("dnsbl", found) if found is not None else None
        if refusal is None:
            refusal = await self._sender_checks_refusal(protocol, sender)
        if refusal is None:
            return None
        if any_domain_allows_sender(snapshot, sender):
            envelope.deferred_refusal = refusal
            return None
        reason, reply = refusal
        self.counters.count_refusal(reason, protocol.session_id, protocol.client_ip, reply)
        return reply

    def _sender_deny_refusal(self, protocol: MailConsoleSMTP, sender: str) -> str | None:
        """The server's sender deny list, at MAIL (not for signed-in users and relay-list clients)."""
        policy = self._snapshot().policy
        if not policy.sender_deny or antispam_exempt(
            policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip
        ):
            return None
        refusal = sender_deny_refusal(policy, sender)
        if refusal is not None:
            self.counters.count_refusal("sender_denied", protocol.session_id, protocol.client_ip, refusal)
        return refusal

    async def _sender_checks_refusal(self, protocol: MailConsoleSMTP, sender: str) -> tuple[str, str] | None:
        """require_sender_domain and ptr_matches_sender: (reason, reply) of the first that refuses."""
        policy = self._snapshot().policy
        if not (policy.require_sender_domain or policy.ptr_matches_sender) or self.sender_checks is None:
            return None
        domain = sender_domain(sender)
        if domain is None or antispam_exempt(policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip):
            return None
        if policy.require_sender_domain:
            lookup = await self.sender_checks.sender_domain(domain, policy.dns_server)
            refusal = sender_domain_refusal(sender, lookup)
            if refusal is not None:
                return "sender_domain", refusal
        if policy.ptr_matches_sender:
            names, failed = await self.sender_checks.client_names(protocol.client_ip, policy.dns_server)
            refusal = ptr_sender_refusal(sender, names, lookup_failed=failed)
            if refusal is not None:
                return "ptr_mismatch", refusal
        return None

    async def _sending_blocked_refusal(self, protocol: MailConsoleSMTP) -> str | None:
        """A signed-in mailbox blocked by an outbound limit may not send until it is released."""
        user = protocol.signed_in_as
        if not user or self.outbound is None or not self.outbound.enabled:
            return None
        from servers.services.outbound_limits import sending_block_reason

        loop = asyncio.get_running_loop()
        reason = await loop.run_in_executor(None, sending_block_reason, user)
        if reason is None:
            return None
        refusal = sending_blocked_refusal(user, reason)
        self.counters.count_refusal("sending_blocked", protocol.session_id, protocol.client_ip, refusal)
        return refusal

    async def _outbound_limit_refusal(self, protocol: MailConsoleSMTP, envelope: LocalEnvelope) -> str | None:
        """Count a signed-in mailbox's message; over a limit, block the mailbox and refuse the message."""
        user = protocol.signed_in_as
        if not user or self.outbound is None or not self.outbound.enabled:
            return None
        snapshot = self._snapshot()
        entry = snapshot.mailboxes.get(user.lower())
        limits = effective_outbound_limits(snapshot.policy, entry.outbound_overrides if entry else (None, None, None))
        if not limits:
            return None
        sent = await self.outbound.count_message(snapshot.server_id, user, envelope.rcpt_tos)
        if sent is None:
            return None
        reason = outbound_limit_exceeded(
            limits,
            messages_this_hour=sent.messages_this_hour,
            messages_today=sent.messages_today,
            new_recipients_today=sent.new_recipients_today,
        )
        if reason is None:
            return None
        from servers.services.outbound_limits import block_sending

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, block_sending, snapshot.server_id, user, reason)
        refusal = sending_blocked_refusal(user, reason)
        self.counters.count_refusal("outbound_limit", protocol.session_id, protocol.client_ip, refusal)
        return refusal

    def _recipient_sender_refusal(
        self, protocol: MailConsoleSMTP, envelope: LocalEnvelope, domain: str, recipient: str
    ) -> str | None:
        """At RCPT: the recipient domain's deny list, then a MAIL-stage refusal its allow list does not lift."""
        snapshot = self._snapshot()
        if antispam_exempt(snapshot.policy, signed_in_as=protocol.signed_in_as, client_ip=protocol.client_ip):
            return None
        sender = envelope.mail_from or ""
        refusal = domain_sender_refusal(snapshot, domain, sender, recipient)
        if refusal is not None:
            self.counters.count_refusal("sender_denied", protocol.session_id, protocol.client_ip, refusal)
            return refusal
        if envelope.deferred_refusal is not None and not domain_allows_sender(snapshot, domain, sender):
            reason, reply = envelope.deferred_refusal
            self.counters.count_refusal(reason, protocol.session_id, protocol.client_ip, f"{reply} (<{recipient}>)")
            return reply
        return None
