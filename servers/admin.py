"""The interim Django admin: every save and delete goes through the services, so the invariants hold here too.

Its sign-in is counted by the console's throttle (the same counters, the same lockout), and what the services
do not cover (nodes, the audit log) is read-only.
"""

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.forms.forms import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils.translation import ngettext

from frontend.throttle import LoginThrottle, lockout_minutes
from servers import services
from servers.models import AuditEntry, Domain, Node, ServiceState, VirtualServer
from servers.services import RefusedError


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's sign-in form, counting failures as the console's sign-in does and refusing a locked-out one."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is None or not password:  # nothing is checked: the required-field errors say why
            return super().clean()
        throttle = LoginThrottle(client_address=self.request.META.get("REMOTE_ADDR", ""), username=username)
        if throttle.is_locked_out():
            minutes = lockout_minutes()
            raise ValidationError(
                ngettext(
                    "Too many failed sign-ins. Try again in %(minutes)d minute.",
                    "Too many failed sign-ins. Try again in %(minutes)d minutes.",
                    minutes,
                )
                % {"minutes": minutes},
                code="throttled",
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            if self.user_cache is None:  # a wrong password (a right one of a non-staff user is no guess)
                throttle.record_failure()
            raise
        throttle.record_success()
        return cleaned


admin.site.login_form = ThrottledAdminAuthenticationForm


def admin_login(request: HttpRequest) -> HttpResponse:
    """The admin's sign-in page, answering 429 while the throttle refuses, as the console's does."""
    response = admin.site.login(request)
    form = (getattr(response, "context_data", None) or {}).get("form")
    if form is not None and form.is_bound and form.has_error(NON_FIELD_ERRORS, code="throttled"):
        response.status_code = 429
    return response


class ServiceBackedAdmin(admin.ModelAdmin):
    """Shows a RefusedError from the services as an error message instead of a crash.

    The bulk "delete selected" action is gone: Django's deletes a queryset at once, past the services; a
    delete is one object at a time through its delete view (`delete_model` calls the service). Should a
    queryset reach `delete_queryset` anyway, each object still goes through `delete_model`.
    """

    def get_actions(self, request: HttpRequest):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for obj in queryset:
            self.delete_model(request, obj)

    def changeform_view(self, request: HttpRequest, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except RefusedError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request: HttpRequest, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except RefusedError as exc:
            self.message_user(request, exc.message, level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class DomainInline(admin.TabularInline):
    model = Domain
    fk_name = "server"
    fields = ("name", "type", "alias_of", "relay_allowed", "is_default")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class VirtualServerForm(forms.ModelForm):
    default_domain = forms.CharField(required=False, help_text="Only when creating a server.")

    class Meta:
        model = VirtualServer
        fields = ("node", "home_dir", *services.virtual_servers.EDITABLE_FIELDS)


@admin.register(VirtualServer)
class VirtualServerAdmin(ServiceBackedAdmin):
    form = VirtualServerForm
    list_display = ("name", "node", "ip_address", "port", "desired_state", "state", "restart_count", "last_error")
    list_filter = ("node", "state", "desired_state")
    readonly_fields = (
        "desired_state",
        "state",
        "last_error",
        "pid",
        "restart_count",
        "started_at",
        "heartbeat_at",
        "config_version",
    )
    inlines = [DomainInline]
    actions = ["start_servers", "pause_servers", "stop_servers"]

    def get_readonly_fields(self, request, obj=None):
        # The home directory is fixed once the server exists (IIS wizard, step 3).
        return (*self.readonly_fields, "home_dir", "node") if obj else self.readonly_fields

    def save_model(self, request, obj: VirtualServer, form, change: bool) -> None:
        actor = request.user.get_username()
        if change:
            editable = services.virtual_servers.EDITABLE_FIELDS
            changes = {f: form.cleaned_data[f] for f in form.changed_data if f in editable}
            saved = services.update_virtual_server(obj, actor=actor, **changes)
        else:
            saved = services.create_virtual_server(
                name=obj.name,
                ip_address=obj.ip_address,
                port=obj.port,
                home_dir=obj.home_dir or None,
                default_domain=form.cleaned_data.get("default_domain") or "",
                node=obj.node,
                actor=actor,
            )
        obj.pk = saved.pk

    def save_related(self, request, form, formsets, change) -> None:
        pass

    def delete_model(self, request, obj: VirtualServer) -> None:
        services.delete_virtual_server(obj, actor=request.user.get_username())

    def _set_state(self, request, queryset, desired: ServiceState) -> None:
        for server in queryset:
            try:
                services.set_server_state(server, desired, actor=request.user.get_username())
            except RefusedError as exc:
                self.message_user(request, f"{server.name}: {exc.message}", level=messages.ERROR)

    @admin.action(description="Start selected servers")
    def start_servers(self, request, queryset) -> None:
        self._set_state(request, queryset, ServiceState.RUNNING)

    @admin.action(description="Pause selected servers")
    def pause_servers(self, request, queryset) -> None:
        self._set_state(request, queryset, ServiceState.PAUSED)

    @admin.action(description="Stop selected servers")
    def stop_servers(self, request, queryset) -> None:
        self._set_state(request, queryset, ServiceState.STOPPED)


@admin.register(Domain)
class DomainAdmin(ServiceBackedAdmin):
    list_display = ("name", "server", "type", "alias_of", "relay_allowed", "is_default")
    list_filter = ("type", "server")
    fields = ("server", "name", "type", "alias_of", "relay_allowed")
    actions = ["make_default"]

    def get_readonly_fields(self, request, obj=None):
        return ("server", "name") if obj else ()

    def save_model(self, request, obj: Domain, form, change: bool) -> None:
        actor = request.user.get_username()
        if change:
            saved = services.change_domain_type(
                obj, obj.type, alias_of=obj.alias_of, relay_allowed=obj.relay_allowed, actor=actor
            )
        else:
            saved = services.add_domain(
                obj.server, obj.name, type=obj.type, alias_of=obj.alias_of, relay_allowed=obj.relay_allowed, actor=actor
            )
        obj.pk = saved.pk

    def delete_model(self, request, obj: Domain) -> None:
        services.remove_domain(obj, actor=request.user.get_username())

    @admin.action(description="Make the default domain of its server")
    def make_default(self, request, queryset) -> None:
        for domain in queryset:
            try:
                services.set_default_domain(domain, actor=request.user.get_username())
            except RefusedError as exc:
                self.message_user(request, f"{domain.name}: {exc.message}", level=messages.ERROR)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Shown, never written here: no service backs a direct add, change or delete of these objects."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Node)
class NodeAdmin(ReadOnlyAdmin):
    """Nodes register themselves; the only changes are the service-state actions, which call the service."""

    list_display = ("name", "smtp_service_state", "last_seen_at")
    readonly_fields = ("name", "smtp_service_state", "registered_at", "last_seen_at")
    actions = ["start_service", "pause_service", "stop_service"]

    def _set(self, request, queryset, desired: ServiceState) -> None:
        for node in queryset:
            services.set_node_service_state(node, desired, actor=request.user.get_username())

    @admin.action(description="Start the SMTP service (all its servers)")
    def start_service(self, request, queryset) -> None:
        self._set(request, queryset, ServiceState.RUNNING)

    @admin.action(description="Pause the SMTP service (all its servers)")
    def pause_service(self, request, queryset) -> None:
        self._set(request, queryset, ServiceState.PAUSED)

    @admin.action(description="Stop the SMTP service (all its servers)")
    def stop_service(self, request, queryset) -> None:
        self._set(request, queryset, ServiceState.STOPPED)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor", "action", "object_type", "object_repr")
    list_filter = ("action", "object_type", "actor")
    readonly_fields = [f.name for f in AuditEntry._meta.fields]
