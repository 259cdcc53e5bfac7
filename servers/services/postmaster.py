"""RFC 5321 section 4.5.1: every domain accepts mail for postmaster."""

from servers.models import Domain, DomainType, GroupAddress, Mailbox

POSTMASTER = "postmaster"


def ensure_postmaster(domain: Domain) -> None:
    """Give a local domain its postmaster address, unless a mailbox already has that name.

    The group starts without members, so its mail lands in the server's Drop folder until an
    administrator adds a mailbox to it.
    """
    if domain.type != DomainType.LOCAL:
        return
    if Mailbox.objects.filter(domain=domain, local_part=POSTMASTER).exists():
        return
    GroupAddress.objects.get_or_create(domain=domain, local_part=POSTMASTER)
