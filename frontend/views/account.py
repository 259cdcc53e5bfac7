"""A console user's own settings: the password and the time zone (the language is the switch on every page)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext
from django.views.decorators.debug import sensitive_post_parameters

from frontend import language
from frontend.access import actor
from frontend.account_forms import ConsolePasswordForm, TimeZoneForm
from frontend.views.base import render_console
from servers.services.audit import record_change


@sensitive_post_parameters("old_password", "new_password1", "new_password2")
@login_required
def my_account(request: HttpRequest) -> HttpResponse:
    owner = language.user_owner(request.user.pk)
    posted = request.POST.get("form", "") if request.method == "POST" else ""
    password_form = ConsolePasswordForm(request.user, request.POST if posted == "password" else None)
    zone_form = TimeZoneForm(
        request.POST if posted == "time_zone" else None, initial={"time_zone": language.saved_time_zone(owner)}
    )
    if posted == "password" and password_form.is_valid():
        user = password_form.save()
        update_session_auth_hash(request, user)  # this session stays signed in; others end
        record_change(actor=actor(request), action="change_own_password", obj=user)
        messages.success(request, gettext("Your password was changed."))
        return redirect("console:account")
    if posted == "time_zone" and zone_form.is_valid():
        language.save_time_zone(request, owner, zone_form.cleaned_data["time_zone"])
        messages.success(
            request,
            gettext("Times are now shown in: %(zone)s.")
            % {"zone": zone_form.cleaned_data["time_zone"] or gettext("the server's time zone")},
        )
        return redirect("console:account")
    status = 400 if posted else 200
    return render_console(
        request,
        "console/account.html",
        {"password_form": password_form, "zone_form": zone_form},
        selected="account",
        status=status,
    )
