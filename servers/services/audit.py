"""The audit log: every change made through the services leaves one entry."""

from typing import Any

from django.db import models
from django.forms.models import model_to_dict

from servers.models import AuditEntry


def snapshot_of(obj: models.Model, fields: list[str] | None = None) -> dict[str, Any]:
    """The values of a model's fields, JSON-ready, as the audit log stores them."""
    data = model_to_dict(obj, fields=fields)
    return {
        key: (value if isinstance(value, (str, int, float, bool, type(None))) else str(value))
        for key, value in data.items()
    }


def record_change(
    *,
    actor: str,
    action: str,
    obj: models.Model,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEntry:
    """Write one audit entry for a change to `obj`."""
    return AuditEntry.objects.create(
        actor=actor,
        action=action,
        object_type=obj._meta.model_name,
        object_id=str(obj.pk or ""),
        object_repr=str(obj)[:300],
        before=before,
        after=after,
    )
