"""The interface language: chosen with the switch on every page, remembered per console user and per
webmail mailbox, and restored at sign-in (Django's LocaleMiddleware then reads it from the cookie).

Without a choice the browser's Accept-Language decides (settings.LANGUAGES: English and Russian).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.translation import gettext_lazy as _


class LanguagePreference(models.Model):
    """One saved choice: `owner` is "user:<id>" for a console user, "mailbox:<id>" for a webmail mailbox."""

    owner = models.CharField(max_length=40, unique=True)
    language = models.CharField(max_length=8, choices=settings.LANGUAGES, verbose_name=_("language"))
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.owner}: {self.language}"


def user_owner(user_id: int) -> str:
    return f"user:{user_id}"


def mailbox_owner(mailbox_id: int) -> str:
    return f"mailbox:{mailbox_id}"


def is_supported(language: str) -> bool:
    return language in dict(settings.LANGUAGES)


def save_choice(owner: str, language: str) -> None:
    if is_supported(language):
        LanguagePreference.objects.update_or_create(owner=owner, defaults={"language": language})


def saved_choice(owner: str) -> str | None:
    return LanguagePreference.objects.filter(owner=owner).values_list("language", flat=True).first()


def remember_in_browser(response: HttpResponse, language: str) -> HttpResponse:
    """Set the cookie LocaleMiddleware reads, as Django's own set_language view does."""
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        language,
        max_age=settings.LANGUAGE_COOKIE_AGE,
        path=settings.LANGUAGE_COOKIE_PATH,
        domain=settings.LANGUAGE_COOKIE_DOMAIN,
        secure=settings.LANGUAGE_COOKIE_SECURE,
        httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        samesite=settings.LANGUAGE_COOKIE_SAMESITE,
    )
    return response


def restore_at_sign_in(request: HttpRequest, response: HttpResponse, owner: str) -> HttpResponse:
    """After a sign-in: the owner's saved language wins; without one, what they use now is saved."""
    saved = saved_choice(owner)
    if saved is not None:
        translation.activate(saved)
        return remember_in_browser(response, saved)
    chosen = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME)
    if chosen and is_supported(chosen):
        save_choice(owner, chosen)
    return response
