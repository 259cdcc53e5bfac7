"""Forms of the console: they parse input; the services in `servers.services` decide what is valid."""

from __future__ import annotations

from collections.abc import Sequence

from django import forms
from django.utils.translation import gettext_lazy

from servers.models import DomainType
from servers.services import RefusedError
from servers.services.virtual_servers import SERVER_SETTINGS

PASSWORD_RULE = "At least 8 characters, with an upper-case letter, a lower-case letter and a digit."


class ConsoleForm(forms.Form):
    """A form whose widgets carry Bootstrap's classes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.style_widgets()

    def style_widgets(self) -> None:
        for field in self.fields.values():
            widget = field.widget
            if isinstance(widget, (forms.CheckboxInput, forms.RadioSelect)):
                css = "form-check-input"
            elif isinstance(widget, forms.Select):
                css = "form-select"
            else:
                css = "form-control"
            widget.attrs.setdefault("class", css)


def add_refusal(form: forms.Form, error: RefusedError, field_map: dict[str, str] | None = None) -> None:
    """Show a service's refusal next to the field it names (or above the form)."""
    field = (field_map or {}).get(error.field or "", error.field)
    form.add_error(field if field in form.fields else None, error.message)


class LoginForm(ConsoleForm):
    username = forms.CharField(
        max_length=150, widget=forms.TextInput(attrs={"autofocus": True, "autocomplete": "username"})
    )
    password = forms.CharField(strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


# -- the New SMTP Virtual Server wizard -----------------------------------------------------------


SERVER_KIND_MX, SERVER_KIND_SUBMISSION = "mx", "submission"


class WizardNameForm(ConsoleForm):
    name = forms.CharField(
        max_length=100, label="Name", help_text="A name for the virtual server, e.g. \u201cLab server\u201d."
    )
    kind = forms.ChoiceField(
        label=gettext_lazy("Kind"),
        required=False,
        initial=SERVER_KIND_MX,
        choices=[
            (SERVER_KIND_MX, gettext_lazy("Mail server for its own domains")),
            (SERVER_KIND_SUBMISSION, gettext_lazy("Submission: mail programs of signed-in users send through it")),
        ],
    )


class WizardAddressForm(ConsoleForm):
    ip_address = forms.ChoiceField(label="IP address")
    port = forms.IntegerField(label="TCP port", min_value=1, max_value=65535, initial=25)

    def __init__(self, *args, ip_choices: list[tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["ip_address"].choices = ip_choices


class WizardHomeForm(ConsoleForm):
    home_dir = forms.CharField(
        max_length=500, label="Home directory", help_text="BadMail, Drop, Pickup and Queue are created inside it."
    )


class WizardDomainForm(ConsoleForm):
    default_domain = forms.CharField(
        max_length=253,
        required=False,
        label="Default domain",
        help_text=gettext_lazy("A local domain, e.g. study003.local. A submission server takes none."),
    )
    start = forms.BooleanField(required=False, initial=True, label="Start the server when it is created")


WIZARD_STEPS = [
    ("name", "Name", WizardNameForm),
    ("address", "IP address and port", WizardAddressForm),
    ("home", "Home directory", WizardHomeForm),
    ("domain", "Default domain", WizardDomainForm),
]
# Which step asks for each field the service may complain about.
WIZARD_FIELD_STEP = {"name": 0, "ip_address": 1, "port": 1, "home_dir": 2, "default_domain": 3}


# -- property sheet tabs ----------------------------------------------------------------------------

# Where each setting of a virtual server goes on its property sheet, in IIS's order: read from the
# services' one list of settings (`SERVER_SETTINGS`). A tab shows only the settings the domain layer
# lets the console change today (`EDITABLE_FIELDS`), so new settings appear as soon as a service
# accepts them.
SERVER_TABS: dict[str, list[str]] = {
    tab: [name for name, its_tab, _ in SERVER_SETTINGS if its_tab == tab]
    for tab in dict.fromkeys(tab for _, tab, _ in SERVER_SETTINGS)
}
SERVER_FIELD_LABELS = {
    "ip_address": "IP address",
    "port": "TCP port",
    "max_message_size_kb": "Limit message size to (KB)",
    "max_session_size_kb": "Limit session size to (KB)",
    "idle_timeout_s": "Connection time-out (seconds)",
    "max_session_duration_s": "Longest session (seconds)",
    "min_data_rate_bps": "Slowest data rate (bytes/s)",
    "tls_port": "TLS port (implicit TLS)",
    "worker_processes": "Session processes (1-16; more use more cores)",
    "allow_anonymous": "Anonymous access",
    "allow_basic_auth": "Basic authentication (AUTH PLAIN and LOGIN)",
    "require_tls": "Require TLS (STARTTLS) before AUTH and MAIL",
    "auth_requires_tls": "Require TLS (STARTTLS) before AUTH",
    "require_client_ptr": "Require a reverse-DNS (PTR) name for clients",
    "require_auth_for_local_senders": "Senders in local domains must sign in",
    "smart_host_port": "Smart host TCP port",
    "outbound_port": "Outbound TCP port",
    "pop_before_smtp_minutes": "POP before SMTP (minutes)",
    "dnsbl_zones": "DNS blocklist zones (one a line, e.g. zen.spamhaus.org)",
    "dnsbl_action": "When a blocklist lists the client",
    "greylisting": "Greylisting (defer unknown senders once)",
    "greylisting_delay_s": "Greylisting delay (seconds)",
    "spf_action": "SPF check of the envelope sender",
    "dmarc_action": "DMARC policy of the From: domain",
    "attachment_filter": "Forbidden attachments",
    "forbidden_extensions": "Forbidden file name extensions (one a line, e.g. exe)",
    "forbidden_mime_types": "Forbidden MIME types (one a line, e.g. application/x-msdownload)",
    "max_attachment_size_kb": "Largest attachment (KB; empty: no limit)",
    "virus_scanner": "Virus scanner (clamd: tcp://127.0.0.1:3310 or unix:/path; empty: off)",
    "virus_scanner_failure": "When the virus scanner cannot be reached",
    "rspamd_url": "rspamd URL (empty: the RSPAMD_URL setting; both empty: no spam scoring)",
    "spam_tag_score": "Mark as spam from score (X-Spam-Flag, subject prefix; empty: off)",
    "spam_subject_prefix": "Subject prefix for spam",
    "spam_junk_score": "File in Junk from score (empty: off)",
    "spam_refuse_score": "Refuse (554 5.7.1) from score (empty: off)",
    "require_sender_domain": "Sender's domain must exist (MX or address record)",
    "ptr_matches_sender": "Client's reverse-DNS name must be in the sender's domain",
    "sender_allow": "Allowed senders (skip anti-spam checks; addresses or domains, one a line)",
    "sender_deny": "Denied senders (refused at MAIL; addresses or domains, one a line)",
    "outbound_max_messages_per_hour": "Outbound: messages per hour a mailbox may send (0 = no limit)",
    "outbound_max_messages_per_day": "Outbound: messages per day a mailbox may send (0 = no limit)",
    "outbound_max_new_recipients_per_day": "Outbound: new recipients per day a mailbox may write to (0 = no limit)",
    "first_retry_interval_s": "First retry interval (seconds)",
    "second_retry_interval_s": "Second retry interval (seconds)",
    "third_retry_interval_s": "Third retry interval (seconds)",
    "subsequent_retry_interval_s": "Subsequent retry interval (seconds)",
    "delay_notification_s": "Delay notification (seconds; 0 = never)",
    "expiration_timeout_s": "Expiration time-out (seconds)",
    "outbound_timeout_s": "Outbound time-out (seconds)",
    "ndr_copy_address": "Send a copy of non-delivery reports to",
    "dns_server": "DNS server (ip or ip:port; empty = system's)",
}


def server_tab_fields(tab: str, model, editable: tuple[str, ...]) -> list[str]:
    """The settings a tab shows: editable ones on its list (unplaced editable ones go on General)."""
    known = {f.name for f in model._meta.get_fields()}
    fields = [name for name in SERVER_TABS.get(tab, []) if name in editable and name in known]
    if tab == "general":
        placed = {name for names in SERVER_TABS.values() for name in names}
        fields += [name for name in editable if name not in placed and name in known and name != "home_dir"]
    return fields


class ServerTabForm(ConsoleForm):
    """Settings of one object (a server, its delivery settings) on a tab, built from the model's fields.

    Secret fields are never shown back: left empty, they keep their value.
    """

    def __init__(
        self,
        *args,
        server,
        field_names: list[str],
        ip_choices: Sequence[tuple[str, str]] = (),
        secret_fields: tuple[str, ...] = (),
        **kwargs,
    ) -> None:
        kwargs.setdefault(
            "initial", {name: "" if name in secret_fields else getattr(server, name) for name in field_names}
        )
        super().__init__(*args, **kwargs)
        self.secret_fields = secret_fields
        for name in field_names:
            if name == "ip_address":
                choices = list(ip_choices)
                if server.ip_address not in dict(choices):
                    choices.append((server.ip_address, server.ip_address))
                field = forms.ChoiceField(choices=choices)
            elif name in secret_fields:
                field = forms.CharField(
                    required=False,
                    strip=False,
                    widget=forms.PasswordInput(render_value=False),
                    help_text="Leave empty to keep the current one.",
                )
            else:
                field = server._meta.get_field(name).formfield()
            field.label = SERVER_FIELD_LABELS.get(name, name.replace("_", " ").capitalize())
            self.fields[name] = field
        self.style_widgets()

    def changes_from(self, obj) -> dict:
        """The cleaned values that differ from `obj` (an empty secret means "unchanged")."""
        changes = {}
        for name, value in self.cleaned_data.items():
            if name in self.secret_fields:
                if value:
                    changes[name] = value
            elif str(getattr(obj, name)) != str(value):
                changes[name] = value
        return changes


# -- domains, mailboxes, groups -------------------------------------------------------------------


class AddDomainForm(ConsoleForm):
    name = forms.CharField(max_length=253, label="Domain name")
    type = forms.ChoiceField(choices=DomainType.choices, initial=DomainType.LOCAL)
    alias_of = forms.ChoiceField(required=False, label="Alias of (alias domains)")
    relay_allowed = forms.BooleanField(required=False, label="Allow relaying to it (remote domains)")

    def __init__(self, *args, local_domains: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["alias_of"].choices = [("", "—")] + [(d, d) for d in local_domains]


class RouteForm(ConsoleForm):
    smart_host = forms.CharField(
        max_length=255,
        required=False,
        label="Smart host",
        help_text="A host name or [IP address]; empty: deliver to the domain's MX hosts.",
    )
    port = forms.IntegerField(required=False, min_value=1, max_value=65535, label="TCP port", initial=25)
    username = forms.CharField(max_length=255, required=False, label="User name (if the smart host wants AUTH)")
    password = forms.CharField(
        max_length=255,
        required=False,
        strip=False,
        label="Password",
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current one.",
    )


class AddMailboxForm(ConsoleForm):
    local_part = forms.CharField(max_length=64, label="Mailbox name")
    display_name = forms.CharField(max_length=200, required=False)
    password = forms.CharField(strip=False, widget=forms.PasswordInput, help_text=PASSWORD_RULE)
    quota_kb = forms.IntegerField(required=False, min_value=0, label="Quota (KB)", help_text="Empty: no limit.")
    quota_messages = forms.IntegerField(required=False, min_value=0, label="Quota (messages)")


class MailboxPropertiesForm(ConsoleForm):
    display_name = forms.CharField(max_length=200, required=False)
    quota_kb = forms.IntegerField(required=False, min_value=0, label="Quota (KB)", help_text="Empty: no limit.")
    quota_messages = forms.IntegerField(required=False, min_value=0, label="Quota (messages)")
    is_catch_all = forms.BooleanField(required=False, label="Catch-all: receives mail for unknown addresses")
    outbound_max_messages_per_hour = forms.IntegerField(
        required=False, min_value=0, label="Outbound: messages per hour", help_text="Empty: the server's; 0: no limit."
    )
    outbound_max_messages_per_day = forms.IntegerField(
        required=False, min_value=0, label="Outbound: messages per day", help_text="Empty: the server's; 0: no limit."
    )
    outbound_max_new_recipients_per_day = forms.IntegerField(
        required=False,
        min_value=0,
        label="Outbound: new recipients per day",
        help_text="Empty: the server's; 0: no limit.",
    )


class ReleaseSendingForm(ConsoleForm):
    held_mail = forms.ChoiceField(
        choices=[("send", "Let the held mail go"), ("delete", "Delete the held mail")],
        widget=forms.RadioSelect,
        initial="send",
        label="Held mail",
    )


class ChangePasswordForm(ConsoleForm):
    password = forms.CharField(strip=False, widget=forms.PasswordInput, label="New password", help_text=PASSWORD_RULE)


class DeleteMailboxForm(ConsoleForm):
    remove_mail = forms.TypedChoiceField(
        choices=[("0", "Keep the stored mail on disk"), ("1", "Remove the stored mail too")],
        coerce=lambda v: v == "1",
        widget=forms.RadioSelect,
        initial="0",
        label="Stored mail",
    )


class AddGroupForm(ConsoleForm):
    local_part = forms.CharField(max_length=64, label="Group address (name before @)")


class ImportForm(ConsoleForm):
    csv_file = forms.FileField(label="CSV file", help_text="Columns: local_part, password, display_name, quota_kb")
    dry_run = forms.BooleanField(required=False, initial=True, label="Dry run: only check, create nothing")


# -- the node's IMAP service ------------------------------------------------------------------------


class ImapServiceForm(ConsoleForm):
    """The IMAP service's property sheet; `servers.services.update_imap_service` checks the values."""

    ip_address = forms.CharField(label="IP address", max_length=45, help_text="0.0.0.0 listens on every address.")
    port = forms.IntegerField(label="TCP port (STARTTLS)", min_value=1, max_value=65535)
    tls_port = forms.IntegerField(
        label="Implicit TLS port (IMAPS)",
        required=False,
        min_value=1,
        max_value=65535,
        help_text="Usually 993; empty: none.",
    )
    plaintext_requires_tls = forms.BooleanField(label="Require TLS (STARTTLS) before LOGIN", required=False)
    default_domain = forms.CharField(
        label="Default domain",
        required=False,
        max_length=253,
        help_text="Appended to a bare user name at login; empty: the first server's default domain.",
    )
