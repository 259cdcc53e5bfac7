"""Mailbox import from CSV (checked row by row before anything is created) and export to CSV."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from django.db import transaction
from django.utils.translation import gettext

from servers import services
from servers.models import Domain, GroupAddress, Mailbox
from servers.services import RefusedError, mailbox_usage
from servers.services.mailboxes import check_quota_ceiling, new_local_part

IMPORT_COLUMNS = ["local_part", "password", "display_name", "quota_kb"]
EXPORT_COLUMNS = [
    "address",
    "local_part",
    "display_name",
    "quota_kb",
    "quota_messages",
    "is_locked",
    "is_catch_all",
    "size_kb",
    "total_items",
    "last_logon_at",
    "last_logon_from",
]
MAX_ROWS = 5000


@dataclass
class ImportRow:
    line: int
    local_part: str
    display_name: str
    password: str = field(repr=False)
    quota_kb: int | None
    errors: list[str]


def parse_csv(text: str) -> list[ImportRow]:
    """Read the rows of an import file; a header row with the column names is required."""
    reader = csv.DictReader(io.StringIO(text))
    fields = [name.strip().lower() for name in reader.fieldnames or []]
    if "local_part" not in fields or "password" not in fields:
        raise RefusedError(
            gettext("The first line must name the columns: local_part, password, display_name, quota_kb."),
            field="csv_file",
        )
    reader.fieldnames = fields
    rows: list[ImportRow] = []
    for number, record in enumerate(reader, start=2):
        if len(rows) >= MAX_ROWS:
            raise RefusedError(
                gettext("At most %(count)d rows can be imported at once.") % {"count": MAX_ROWS}, field="csv_file"
            )
        if not any((value or "").strip() for value in record.values() if isinstance(value, str)):
            continue
        errors = []
        raw_quota = (record.get("quota_kb") or "").strip()
        quota = None
        if raw_quota:
            try:
                quota = int(raw_quota)
                if quota < 0:
                    raise ValueError
            except ValueError:
                errors.append(gettext("quota_kb %(value)s is not a whole number of KB.") % {"value": repr(raw_quota)})
                quota = None
        rows.append(
            ImportRow(
                line=number,
                local_part=(record.get("local_part") or "").strip(),
                display_name=(record.get("display_name") or "").strip(),
                password=record.get("password") or "",
                quota_kb=quota,
                errors=errors,
            )
        )
    return rows


def check_rows(domain: Domain, rows: list[ImportRow], *, acting_user=None) -> list[ImportRow]:
    """Add to each row what would stop it from being created; nothing is written."""
    taken = set(Mailbox.objects.filter(domain=domain).values_list("local_part", flat=True))
    taken |= set(GroupAddress.objects.filter(domain=domain).values_list("local_part", flat=True))
    seen: dict[str, int] = {}
    for row in rows:
        try:
            local_part = new_local_part(row.local_part)
        except RefusedError as exc:
            row.errors.insert(0, exc.message)
        else:
            if local_part in taken:
                row.errors.append(gettext("%(address)s already exists.") % {"address": f"{local_part}@{domain.name}"})
            elif local_part in seen:
                row.errors.append(
                    gettext("%(name)s is also on line %(line)d.") % {"name": local_part, "line": seen[local_part]}
                )
            seen.setdefault(local_part, row.line)
        row.errors.extend(services.password_policy_errors(row.password))
        try:
            check_quota_ceiling(domain, row.quota_kb * 1024 if row.quota_kb else None, acting_user)
        except RefusedError as exc:
            row.errors.append(exc.message)
    return rows


def import_rows(domain: Domain, rows: list[ImportRow], *, actor: str, acting_user=None) -> int:
    """Create every row's mailbox, or none of them if any is refused."""
    with transaction.atomic():
        for row in rows:
            try:
                services.add_mailbox(
                    domain,
                    row.local_part,
                    row.password,
                    display_name=row.display_name,
                    quota_bytes=row.quota_kb * 1024 if row.quota_kb else None,
                    actor=actor,
                    acting_user=acting_user,
                )
            except RefusedError as exc:
                raise RefusedError(f"Line {row.line}: {exc.message}", field="csv_file") from None
    return len(rows)


def export_csv(mailboxes) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for mailbox in mailboxes:
        usage = mailbox_usage(mailbox)
        writer.writerow(
            [
                mailbox.address,
                mailbox.local_part,
                mailbox.display_name,
                mailbox.quota_bytes // 1024 if mailbox.quota_bytes else "",
                mailbox.quota_messages or "",
                int(mailbox.is_locked),
                int(mailbox.is_catch_all),
                (usage.size_bytes + 1023) // 1024,
                usage.message_count,
                mailbox.last_logon_at.isoformat() if mailbox.last_logon_at else "",
                mailbox.last_logon_from,
            ]
        )
    return out.getvalue()
