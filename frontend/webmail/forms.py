"""Forms of the webmail: sign-in, compose, password, folders."""

from __future__ import annotations

from email.utils import getaddresses

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext, gettext_lazy, ngettext

from servers.imap.store_api import StoreError
from servers.services.mailboxes import password_policy_errors

from .folders import imap_name

MAX_RECIPIENTS = 100


class BootstrapForm(forms.Form):
    """Bootstrap's classes on every widget, so the templates can render fields as they are."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            css = "form-check-input" if isinstance(field.widget, forms.CheckboxInput) else "form-control"
            field.widget.attrs["class"] = f"{field.widget.attrs.get('class', '')} {css}".strip()


class SignInForm(BootstrapForm):
    address = forms.CharField(
        max_length=320, widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True})
    )
    password = forms.CharField(
        max_length=200, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


def parse_addresses(value: str) -> list[str]:
    """Addresses from a header-style list ("Bob <bob@x>, carol@y"); raise ValidationError naming a bad one."""
    addresses = []
    for _, address in getaddresses([value or ""]):
        address = address.strip()
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError:
            raise ValidationError(gettext("%(address)s is not a mail address.") % {"address": repr(address)}) from None
        addresses.append(address)
    if len(addresses) > MAX_RECIPIENTS:
        raise ValidationError(
            ngettext(
                "At most %(count)d recipient per message.", "At most %(count)d recipients per message.", MAX_RECIPIENTS
            )
            % {"count": MAX_RECIPIENTS}
        )
    return addresses


class AddressListField(forms.CharField):
    def clean(self, value):
        text = super().clean(value)
        parse_addresses(text)
        return " ".join(text.split())


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data if item]
        return [single(data, initial)] if data else []


class ComposeForm(BootstrapForm):
    to = AddressListField(max_length=5000, required=False, label=gettext_lazy("To"))
    cc = AddressListField(max_length=5000, required=False, label=gettext_lazy("Cc"))
    bcc = AddressListField(max_length=5000, required=False, label=gettext_lazy("Bcc"))
    subject = forms.CharField(max_length=500, required=False, label=gettext_lazy("Subject"))
    body = forms.CharField(
        required=False, strip=False, widget=forms.Textarea(attrs={"rows": 14}), label=gettext_lazy("Body")
    )
    attachments = MultipleFileField(required=False, label=gettext_lazy("Attachments"))
    save_copy = forms.BooleanField(required=False, initial=True, label=gettext_lazy("Keep a copy in Sent"))
    # The message answered or forwarded (its id in this mailbox's index), for threading headers and
    # the forwarded attachments.
    in_reply_to = forms.IntegerField(required=False, widget=forms.HiddenInput)
    forward_of = forms.IntegerField(required=False, widget=forms.HiddenInput)
    # The draft this message continues (its id in Drafts): replaced when saved again, removed once sent.
    draft = forms.IntegerField(required=False, min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)

    def __init__(self, *args, for_draft: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.for_draft = for_draft  # a draft may have no recipient yet

    def clean_subject(self) -> str:
        # A header is one line: a line break posted here would otherwise be a header injection attempt.
        return " ".join(self.cleaned_data["subject"].split())

    def clean(self):
        data = super().clean()
        if not self.errors and not self.for_draft and not self.recipients():
            raise ValidationError(gettext("Give at least one recipient."))
        return data

    def recipients(self) -> list[str]:
        data = self.cleaned_data
        found: list[str] = []
        for name in ("to", "cc", "bcc"):
            for address in parse_addresses(data.get(name, "")):
                if address.lower() not in {a.lower() for a in found}:
                    found.append(address)
        return found


class PasswordForm(BootstrapForm):
    current_password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        label=gettext_lazy("Current password"),
    )
    new_password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        label=gettext_lazy("New password"),
    )
    confirm_password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        label=gettext_lazy("Confirm password"),
    )

    def clean_new_password(self):
        password = self.cleaned_data["new_password"]
        errors = password_policy_errors(password)
        if errors:
            raise ValidationError(errors)
        return password

    def clean(self):
        data = super().clean()
        if data.get("new_password") and data.get("confirm_password") != data.get("new_password"):
            self.add_error("confirm_password", gettext("The two new passwords differ."))
        return data


def _folder_name_error(error: StoreError) -> ValidationError:
    return ValidationError(gettext("This name cannot be used: %(reason)s.") % {"reason": error.text})


class CreateFolderForm(BootstrapForm):
    """A new folder: a name in any script ("." makes levels), optionally below an existing folder."""

    name = forms.CharField(max_length=200, label=gettext_lazy("Folder name"))
    parent = forms.ChoiceField(required=False, label=gettext_lazy("Inside"))

    def __init__(self, *args, parents: list[tuple[str, str]] = (), **kwargs) -> None:  # type: ignore[assignment]
        super().__init__(*args, **kwargs)
        self.fields["parent"].choices = [("", gettext_lazy("(top level)")), *parents]

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        try:
            imap_name(name)
        except StoreError as error:
            raise _folder_name_error(error) from None
        return name.strip()


class RenameFolderForm(BootstrapForm):
    folder = forms.CharField(max_length=1000, widget=forms.HiddenInput)
    new_name = forms.CharField(max_length=200, label=gettext_lazy("New name"))

    def clean_new_name(self) -> str:
        name = self.cleaned_data["new_name"]
        try:
            imap_name(name)
        except StoreError as error:
            raise _folder_name_error(error) from None
        return name.strip()
