"""The interface language and time zone: the language chosen with the switch on every page, the time
zone on the console's "My account" page and webmail's settings; both remembered per console user and
per webmail mailbox and restored at sign-in (LocaleMiddleware reads the language from its cookie,
`TimeZoneMiddleware` the time zone from the session).

Without a choice the browser's Accept-Language decides the language (settings.LANGUAGES: English and
Russian), and times are shown in the installation's zone (settings.TIME_ZONE).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.db import models
from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _


class LanguagePreference(models.Model):
    """One saved choice: `owner` is "user:<id>" for a console user, "mailbox:<id>" for a webmail mailbox."""

    owner = models.CharField(max_length=40, unique=True)
    language = models.CharField(max_length=8, blank=True, choices=settings.LANGUAGES, verbose_name=_("language"))
    # An IANA zone name ("Europe/Moscow"); empty: the installation's (settings.TIME_ZONE).
    time_zone = models.CharField(max_length=64, blank=True, default="", verbose_name=_("time zone"))
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
    return LanguagePreference.objects.filter(owner=owner).values_list("language", flat=True).first() or None


@cache
def time_zone_names() -> tuple[str, ...]:
    """Every IANA zone Python knows, sorted (the choices of the time zone fields)."""
    return tuple(sorted(name for name in zoneinfo.available_timezones() if "/" in name or name == "UTC"))


def is_time_zone(name: str) -> bool:
    return name in time_zone_names()


def save_time_zone(request: HttpRequest, owner: str, name: str) -> None:
    """Remember the zone for the owner and use it in this session at once ("" : the installation's)."""
    if name and not is_time_zone(name):
        return
    LanguagePreference.objects.update_or_create(owner=owner, defaults={"time_zone": name})
    request.session[TIME_ZONE_SESSION_KEY] = name


def saved_time_zone(owner: str) -> str:
    return LanguagePreference.objects.filter(owner=owner).values_list("time_zone", flat=True).first() or ""


TIME_ZONE_SESSION_KEY = "mailconsole_time_zone"


class TimeZoneMiddleware:
    """Show times in the signed-in person's zone, kept in the session (no query per request)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        name = request.session.get(TIME_ZONE_SESSION_KEY, "") if hasattr(request, "session") else ""
        if name and is_time_zone(name):
            timezone.activate(zoneinfo.ZoneInfo(name))
        else:
            timezone.deactivate()
        return self.get_response(request)


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
    """After a sign-in: the owner's saved language and time zone win; without a saved language, the one
    they use now is saved."""
    request.session[TIME_ZONE_SESSION_KEY] = saved_time_zone(owner)
    saved = saved_choice(owner)
    if saved is not None:
        translation.activate(saved)
        return remember_in_browser(response, saved)
    chosen = request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME)
    if chosen and is_supported(chosen):
        save_choice(owner, chosen)
    return response
