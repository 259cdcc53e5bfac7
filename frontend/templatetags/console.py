"""Small filters the console templates share."""

from django import template
from django.utils.translation import pgettext_lazy

register = template.Library()

# The states of servers and services (servers.models.ServiceState and ObservedState), as the console
# shows them; the models' own labels are English only.
STATE_LABELS = {
    "starting": pgettext_lazy("state", "Starting"),
    "running": pgettext_lazy("state", "Running"),
    "paused": pgettext_lazy("state", "Paused"),
    "stopping": pgettext_lazy("state", "Stopping"),
    "stopped": pgettext_lazy("state", "Stopped"),
    "error": pgettext_lazy("state", "Error"),
}
# A queued message's recipients (servers.delivery.models.RecipientState).
RECIPIENT_STATE_LABELS = {
    "pending": pgettext_lazy("recipient state", "pending"),
    "delivered": pgettext_lazy("recipient state", "delivered"),
    "failed": pgettext_lazy("recipient state", "failed"),
}


@register.filter
def kb(size_bytes: int | None) -> str:
    """Bytes as whole kilobytes, rounded up, as Exchange shows mailbox sizes."""
    if size_bytes is None:
        return ""
    return f"{(int(size_bytes) + 1023) // 1024:,}"


@register.simple_tag(takes_context=True)
def page_query(context, page_number: int) -> str:
    """The current query string with another page number (search terms kept)."""
    query = context["request"].GET.copy()
    query["page"] = page_number
    return "?" + query.urlencode()


@register.simple_tag
def tree_key(*parts) -> str:
    """The name of a tree item, as views pass it in `selected` ("server-3-domains")."""
    return "-".join(str(part) for part in parts)


@register.filter
def audit_changes(entry) -> list[tuple[str, object, object]]:
    """The settings an audit entry changed, as (name, before, after); empty for a create or delete."""
    before, after = entry.before or {}, entry.after or {}
    if not (before and after):
        return []
    names = [name for name in after if before.get(name) != after.get(name)]
    names += [name for name in before if name not in after]
    return [(name, before.get(name), after.get(name)) for name in names]


@register.filter
def state_label(state: str) -> str:
    """A server's or service's state in the interface's language ("running" -> Running / Работает)."""
    return str(STATE_LABELS.get(str(state), state))


@register.filter
def recipient_state_label(state: str) -> str:
    """A queued recipient's state in the interface's language ("pending" -> pending / ожидает)."""
    return str(RECIPIENT_STATE_LABELS.get(str(state), state))
