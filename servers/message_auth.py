"""DMARC (RFC 7489) and Authentication-Results (RFC 8601) from plain values, without I/O.

servers.inbound_auth does the lookups (SPF via servers.spf, the DKIM keys, the DMARC record) and
hands the answers here: which domain a message is from, its DMARC record, whether SPF and DKIM
align, which policy applies; the Authentication-Results header we add, the removal of incoming
ones that claim to be ours (RFC 8601 5), and the plain-words summary webmail shows.

Organisational domains come from the public suffix list bundled with the `publicsuffixlist`
package (pinned in requirements.txt; never downloaded at run time).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from typing import Any

import authres
import authres.dmarc

from servers.message_format import header_section
from servers.spf import SpfResult

# Results that let DMARC pass or that say "we could not tell" (fail open: no action is taken).
TEMPORARY = "temperror"


@dataclass(frozen=True)
class DkimResult:
    result: str  # pass, fail, neutral, temperror, permerror
    domain: str  # d=
    selector: str = ""  # s=
    reason: str = ""


@dataclass(frozen=True)
class DmarcRecord:
    policy: str  # p=: none, quarantine, reject
    subdomain_policy: str  # sp= (p= when absent)
    adkim: str = "r"  # r(elaxed) or s(trict)
    aspf: str = "r"
    pct: int = 100


@dataclass(frozen=True)
class DmarcOutcome:
    result: str  # pass, fail, none, temperror, permerror
    domain: str  # the From: domain ("" when there is none)
    published_policy: str = "none"  # the record's p= (or sp=) for this domain
    action: str = "none"  # what to do: none, quarantine, reject (after pct sampling)


# -- the From: domain -----------------------------------------------------------------------------

_FROM_LINE = re.compile(rb"^from:", re.IGNORECASE)


def from_domain(message: bytes) -> str | None:
    """The domain of the single author address in the single From: header, else None (RFC 7489 6.6.1)."""
    values: list[str] = []
    current: list[bytes] | None = None
    for line in header_section(message).split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(b"".join(current).decode("utf-8", "replace"))
            current = None
        if _FROM_LINE.match(line):
            current = [line[5:]]
    if current is not None:
        values.append(b"".join(current).decode("utf-8", "replace"))
    if len(values) != 1:
        return None
    addresses = [address for _, address in getaddresses(values) if address]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    domain = addresses[0].rpartition("@")[2].strip().rstrip(".").lower()
    return domain or None


# -- DMARC ------------------------------------------------------------------------------------------

_POLICIES = ("none", "quarantine", "reject")


def parse_dmarc_record(texts: Iterable[str]) -> DmarcRecord | None:
    """The DMARC record among a name's TXT strings; None when there is none or more than one (6.6.3)."""
    records = [t for t in texts if re.match(r"^v\s*=\s*DMARC1\s*(;|$)", t)]
    if len(records) != 1:
        return None
    tags: dict[str, str] = {}
    for part in records[0].split(";")[1:]:
        name, separator, value = part.partition("=")
        if separator:
            tags.setdefault(name.strip().lower(), value.strip())
    policy = tags.get("p", "").lower()
    if policy not in _POLICIES:
        policy = "none"  # 6.6.3: an absent or invalid p= is treated as none
    subdomain_policy = tags.get("sp", "").lower()
    if subdomain_policy not in _POLICIES:
        subdomain_policy = policy
    pct_text = tags.get("pct", "100")
    pct = min(100, max(0, int(pct_text))) if pct_text.isdigit() else 100
    adkim = "s" if tags.get("adkim", "r").lower() == "s" else "r"
    aspf = "s" if tags.get("aspf", "r").lower() == "s" else "r"
    return DmarcRecord(policy, subdomain_policy, adkim, aspf, pct)


@functools.lru_cache(maxsize=1)
def _public_suffixes() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


@functools.lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The registrable domain (RFC 7489 3.2): one label below its public suffix; itself if none."""
    domain = domain.rstrip(".").lower()
    return _public_suffixes().privatesuffix(domain) or domain


def aligned(identifier: str, author_domain: str, mode: str) -> bool:
    """Whether an SPF or DKIM domain aligns with the From: domain (3.1): equal, or relaxed: same org."""
    identifier = identifier.rstrip(".").lower()
    author_domain = author_domain.rstrip(".").lower()
    if identifier == author_domain:
        return True
    return (
        mode != "s" and bool(identifier) and organizational_domain(identifier) == organizational_domain(author_domain)
    )


def dmarc_outcome(
    author_domain: str | None,
    record: DmarcRecord | None,
    *,
    record_at_org: bool,
    spf: SpfResult | None,
    dkim: Sequence[DkimResult],
    sample: int = 0,
    lookup_failed: bool = False,
) -> DmarcOutcome:
    """DMARC's verdict for a message, and the action its policy asks for.

    `record_at_org`: the record came from the organisational domain, so sp= applies. `sample`
    (0..99) is compared with pct=: a message outside the percentage gets the next milder policy
    (6.6.4). Fail open: when nothing aligned passed but an SPF or DKIM check of an aligned domain
    could not tell (temperror), or the record lookup failed, the result is temperror and nothing is
    done. A temperror of a domain that does not align changes nothing (it could not have passed).
    """
    if author_domain is None:
        return DmarcOutcome("permerror", "")
    if lookup_failed:
        return DmarcOutcome(TEMPORARY, author_domain)
    if record is None:
        return DmarcOutcome("none", author_domain)
    published = record.subdomain_policy if record_at_org else record.policy
    spf_aligned = spf is not None and spf.result == "pass" and aligned(spf.domain, author_domain, record.aspf)
    dkim_aligned = any(r.result == "pass" and aligned(r.domain, author_domain, record.adkim) for r in dkim)
    if spf_aligned or dkim_aligned:
        return DmarcOutcome("pass", author_domain, published)
    # Only a check that could have aligned may hold the verdict back: a forger's own slow domain must not.
    could_not_tell = (
        spf is not None and spf.result == TEMPORARY and aligned(spf.domain, author_domain, record.aspf)
    ) or any(r.result == TEMPORARY and aligned(r.domain, author_domain, record.adkim) for r in dkim)
    if could_not_tell:
        return DmarcOutcome(TEMPORARY, author_domain, published)
    action = published
    if sample >= record.pct:
        action = {"reject": "quarantine", "quarantine": "none"}.get(published, "none")
    return DmarcOutcome("fail", author_domain, published, action)


# -- Authentication-Results (RFC 8601) ----------------------------------------------------------------


def authentication_results(
    authserv_id: str,
    *,
    signed_in_as: str | None = None,
    spf: SpfResult | None = None,
    spf_identity: str = "mailfrom",
    spf_sender: str = "",
    dkim: Sequence[DkimResult] = (),
    dmarc: DmarcOutcome | None = None,
) -> bytes:
    """The Authentication-Results header line(s) we add, built with `authres`, CRLF-terminated."""
    results: list[authres.BaseAuthenticationResult] = []
    if signed_in_as:
        results.append(authres.SMTPAUTHAuthenticationResult(result="pass", smtp_auth=signed_in_as))
    if spf is not None:
        if spf_identity == "helo":
            results.append(
                authres.SPFAuthenticationResult(
                    result=spf.result, smtp_helo=spf.domain, result_comment=spf.reason or None
                )
            )
        else:
            results.append(
                authres.SPFAuthenticationResult(
                    result=spf.result, smtp_mailfrom=spf_sender or spf.domain, result_comment=_comment(spf.reason)
                )
            )
    if spf is not None or dmarc is not None:
        if not dkim:
            results.append(authres.DKIMAuthenticationResult(result="none"))
        for signature in dkim:
            results.append(
                authres.DKIMAuthenticationResult(
                    result=signature.result,
                    header_d=signature.domain or None,
                    header_s=signature.selector or None,
                    result_comment=_comment(signature.reason),
                )
            )
    if dmarc is not None:
        results.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=dmarc.result,
                header_from=dmarc.domain or None,
                policy=dmarc.published_policy if dmarc.result in ("pass", "fail") else None,
            )
        )
    header = authres.AuthenticationResultsHeader(authserv_id=authserv_id, results=results)
    return _folded(str(header)).encode("utf-8", "surrogateescape") + b"\r\n"


_UNSAFE_IN_COMMENT = re.compile(r"[^A-Za-z0-9 .,:/_@=+'-]")


def _comment(reason: str) -> str | None:
    """A reason as a header comment: it may quote a sender's DNS record, so only plain characters."""
    text = _UNSAFE_IN_COMMENT.sub("?", reason)[:100].strip()
    return text or None


def _folded(line: str) -> str:
    """The header folded after each ';' so no line passes 998 octets (RFC 5322 2.1.1)."""
    return line.replace("; ", ";\r\n\t")


_AR_LINE = re.compile(rb"^authentication-results\s*:", re.IGNORECASE)
_COMMENT = re.compile(r"\([^()]*\)")


def authserv_id_of(value: str) -> str:
    """The authserv-id an Authentication-Results value starts with (comments and version dropped)."""
    text = value
    for _ in range(4):  # nested comments, a few levels
        text = _COMMENT.sub(" ", text)
    words = text.split(";", 1)[0].split()
    return words[0].strip().rstrip(".").lower() if words else ""


def strip_our_results(message: bytes, authserv_id: str) -> bytes:
    """The message without incoming Authentication-Results headers that name our authserv-id.

    RFC 8601 5: a border MTA removes them (a sender could otherwise forge "we checked, all pass");
    other hosts' headers are kept. Unfolded header lines are kept byte for byte.
    """
    head = header_section(message)
    if b"uthentication-" not in head and b"UTHENTICATION-" not in head:
        return message
    ours = authserv_id.rstrip(".").lower()
    lines = head.split(b"\n")
    kept: list[bytes] = []
    index = 0
    removed = False
    while index < len(lines):
        line = lines[index]
        end = index + 1
        while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
            end += 1
        if _AR_LINE.match(line):
            value = b"\n".join(lines[index:end]).split(b":", 1)[1].decode("utf-8", "replace")
            if authserv_id_of(value) == ours:
                removed = True
                index = end
                continue
        kept.extend(lines[index:end])
        index = end
    if not removed:
        return message
    return b"\n".join(kept) + message[len(head) :]


# -- in plain words (webmail) -----------------------------------------------------------------------


@dataclass(frozen=True)
class SenderCheck:
    """What our Authentication-Results say about a message, for a reader."""

    verified: bool | None  # True: DMARC (or SPF and DKIM for the From: domain) passed; False: a failure
    domain: str
    spf: str
    dkim: str
    dmarc: str
    signed_in_as: str = ""


def sender_check(header_values: Iterable[str], authserv_id: str) -> SenderCheck | None:
    """Read the topmost Authentication-Results naming `authserv_id` (ours); None when there is none."""
    ours = authserv_id.rstrip(".").lower()
    for value in header_values:
        if authserv_id_of(value) != ours:
            continue
        try:
            parsed = authres.AuthenticationResultsHeader.parse_value(" ".join(value.split()))
        except authres.AuthResError:
            return None
        found: dict[str, str] = {}
        domain = ""
        signed_in_as = ""
        for result in parsed.results:
            method = result.method.lower()
            properties = {f"{p.type}.{p.name}".lower(): str(p.value) for p in result.properties}
            if method == "auth":
                signed_in_as = properties.get("smtp.auth", "")
            if method == "dkim" and found.get("dkim") == "pass":
                continue  # one passing signature is enough to say so
            found[method] = result.result.lower()
            if method == "dmarc":
                domain = properties.get("header.from", domain)
            elif method == "spf" and not domain:
                mailfrom = properties.get("smtp.mailfrom", "")
                domain = mailfrom.rpartition("@")[2] if mailfrom else properties.get("smtp.helo", "")
        dmarc = found.get("dmarc", "none")
        spf = found.get("spf", "none")
        dkim = found.get("dkim", "none")
        if signed_in_as:
            verified: bool | None = True
        elif dmarc == "pass":
            verified = True
        elif dmarc == "fail" or spf == "fail" or dkim == "fail":
            verified = False
        else:
            verified = None
        return SenderCheck(verified, domain, spf, dkim, dmarc, signed_in_as)
    return None
