"""Import mailboxes from CSV with a dry-run preview; export a domain's mailboxes to CSV."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext, ngettext

from frontend.access import actor
from frontend.bulk import EXPORT_FORMATS, ImportRow, check_rows, decode_upload, export_csv, import_rows, parse_csv
from frontend.forms import ImportForm, add_refusal
from frontend.views.base import render_console
from servers.services import RefusedError, permissions

MAX_UPLOAD_BYTES = 2 * 1024 * 1024


def _created_message(created: int, domain_name: str) -> str:
    return ngettext(
        "%(count)d mailbox was created in %(domain)s.", "%(count)d mailboxes were created in %(domain)s.", created
    ) % {"count": created, "domain": domain_name}


@login_required
def mailbox_import(request: HttpRequest, pk: int) -> HttpResponse:
    """Upload a CSV: a dry run lists every row with its errors; a real run creates all rows or none."""
    domain = permissions.access_domain(request.user, pk)
    session_key = f"console-import-{domain.pk}"
    rows: list[ImportRow] | None
    if request.method == "POST" and request.POST.get("confirm") and request.session.get(session_key):
        # The file checked by the dry run, kept server-side so that passwords never go back to the page.
        text, delimiter = request.session.pop(session_key)
        try:
            rows = check_rows(domain, parse_csv(text, delimiter), acting_user=request.user)
            if any(row.errors for row in rows):
                raise RefusedError(
                    gettext("The rows changed since the dry run; check the file again."), field="csv_file"
                )
            created = import_rows(domain, rows, actor=actor(request), acting_user=request.user)
        except RefusedError as exc:
            messages.error(request, exc.message)
            return redirect("console:domain-import", pk=domain.pk)
        messages.success(request, _created_message(created, domain.name))
        return redirect("console:domain", pk=domain.pk)
    form = ImportForm(request.POST or None, request.FILES or None)
    rows = None
    can_confirm = False
    read_as = ""
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["csv_file"]
        try:
            if upload.size > MAX_UPLOAD_BYTES:
                raise RefusedError(gettext("The file is larger than 2 MB."), field="csv_file")
            decoded = decode_upload(upload.read())
            read_as = decoded.describe()
            rows = check_rows(domain, parse_csv(decoded.text, decoded.delimiter), acting_user=request.user)
            if form.cleaned_data["dry_run"]:
                can_confirm = bool(rows) and not any(row.errors for row in rows)
                if can_confirm:
                    request.session[session_key] = [decoded.text, decoded.delimiter]
            else:
                if any(row.errors for row in rows):
                    form.add_error(None, gettext("Nothing was created: fix the rows marked below first."))
                else:
                    created = import_rows(domain, rows, actor=actor(request), acting_user=request.user)
                    messages.success(request, _created_message(created, domain.name))
                    return redirect("console:domain", pk=domain.pk)
        except RefusedError as exc:
            add_refusal(form, exc)
            rows = None
    return render_console(
        request,
        "console/mailbox_import.html",
        {
            "domain": domain,
            "form": form,
            "rows": rows,
            "can_confirm": can_confirm,
            "read_as": read_as,
            "error_count": sum(1 for row in rows if row.errors) if rows else 0,
        },
        selected=f"domain-{domain.pk}",
    )


@login_required
def mailbox_export(request: HttpRequest, pk: int) -> HttpResponse:
    domain = permissions.access_domain(request.user, pk)
    mailboxes = (
        permissions.mailboxes_visible_to(request.user)
        .filter(domain=domain)
        .select_related("domain__server")
        .order_by("local_part")
    )
    export_format = EXPORT_FORMATS.get(request.GET.get("format", "utf8"))
    if export_format is None:
        return HttpResponse(gettext("Unknown format: use excel or utf8."), status=400, content_type="text/plain")
    charset = "windows-1251" if export_format.encoding == "cp1251" else "utf-8"
    response = HttpResponse(export_csv(mailboxes, export_format), content_type=f"text/csv; charset={charset}")
    response["Content-Disposition"] = f'attachment; filename="{domain.name}-mailboxes.csv"'
    return response
