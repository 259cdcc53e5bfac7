"""Django's TextChoices, re-exported so mypy reads it through choices.pyi (members as strings, not tuples)."""

from django.db.models import TextChoices

__all__ = ["TextChoices"]
