"""The console's hooks onto `servers.services.permissions`, which decides who may see and change what.

Views look objects up with its `access_*` functions (out of scope: 404; seen but not theirs to
change: 403) and guard pages about no one object with `permitted_by(rule)`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import resolve_url
from django.utils.http import urlencode
from django_htmx.http import HttpResponseClientRedirect

from servers.services import permissions


def actor(request) -> str:
    return request.user.get_username()


def permitted_by(rule: Callable[[object], bool], message: str):
    """Only a signed-in user for whom `rule(user)` holds may use this view (403 for the others)."""

    def decorator(view):
        @login_required
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not rule(request.user):
                raise permissions.NotAllowed(message)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def login_required_partial(view):
    """Like login_required, but an htmx request after the session ended reloads the sign-in page."""
    protected = login_required(view)

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated and getattr(request, "htmx", False):
            current = request.htmx.current_url_abs_path or resolve_url("console:dashboard")
            return HttpResponseClientRedirect(f"{resolve_url(settings.LOGIN_URL)}?{urlencode({'next': current})}")
        return protected(request, *args, **kwargs)

    return wrapper
