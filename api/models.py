"""API tokens: a key shown once, stored only as its SHA-256, with an optional expiry."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_PREFIX = "mc_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiTokenQuerySet(models.QuerySet):
    def active(self) -> ApiTokenQuerySet:
        """Tokens that have not expired, of users that may still sign in."""
        now = timezone.now()
        unexpired = models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        return self.filter(unexpired, user__is_active=True)

    def for_key(self, key: str) -> ApiTokenQuerySet:
        return self.filter(key_hash=hash_key(key))


class ApiToken(models.Model):
    """A key a script sends as `Authorization: Token <key>`; it acts with its user's rights."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    # The first characters of the key, to tell tokens apart in a list without storing the key.
    key_prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.key_prefix}… ({self.user}{', ' + self.name if self.name else ''})"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @classmethod
    def issue(cls, user, *, name: str = "", expires_in_days: int | None = None) -> tuple[ApiToken, str]:
        """Create a token for `user`; return it with its key, which is never shown again."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days is not None else None
        token = cls.objects.create(
            user=user, name=name, key_prefix=key[:10], key_hash=hash_key(key), expires_at=expires_at
        )
        return token, key
