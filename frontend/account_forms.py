"""The forms of a person's own settings: the console's "My account" page and webmail's settings."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import PasswordChangeForm
from django.utils.translation import gettext_lazy as _

from frontend.forms import ConsoleForm
from frontend.language import time_zone_names


def time_zone_choices() -> list[tuple[str, str]]:
    return [("", _("The server's time zone (%(zone)s)") % {"zone": settings.TIME_ZONE})] + [
        (name, name.replace("_", " ")) for name in time_zone_names()
    ]


class TimeZoneForm(ConsoleForm):
    time_zone = forms.ChoiceField(label=_("Time zone"), choices=time_zone_choices, required=False)


class ConsolePasswordForm(PasswordChangeForm):
    """Django's own password change (old password, then the new one twice, checked by the validators)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.widget.attrs.setdefault("class", "form-control")
