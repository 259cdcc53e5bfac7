"""Mailbox import from CSV (checked row by row before anything is created) and export to CSV.

The files are the ones Excel makes and opens: UTF-8 with or without a byte-order mark, or Windows-1251
(Russian Excel's "CSV (разделители — запятые)"), separated by commas or by semicolons (Excel's
separator where the decimal separator is a comma, as in Russia). An import says how it read the file;
an export in either format imports again unchanged (same columns; the password column is left empty,
and a row without a password gets a random one nobody knows until an administrator sets it).
"""

from __future__ import annotations

import csv
import io
import secrets
from dataclasses import dataclass, field

from django.db import transaction
from django.utils.translation import gettext

from servers import services
from servers.models import Domain, GroupAddress, Mailbox
from servers.services import RefusedError, mailbox_usage
from servers.services.mailboxes import check_quota_ceiling, new_local_part

IMPORT_COLUMNS = ["local_part", "password", "display_name", "quota_kb", "quota_messages", "is_locked"]
# What an import reads first, then what it ignores: facts about the mailbox, not settings.
EXPORT_COLUMNS = [
    *IMPORT_COLUMNS,
    "is_catch_all",
    "address",
    "size_kb",
    "total_items",
    "last_logon_at",
    "last_logon_from",
]
MAX_ROWS = 5000


@dataclass(frozen=True)
class ExportFormat:
    encoding: str
    delimiter: str


# ?format= of the export: what Russian Excel opens with a double click, and UTF-8 for any script.
EXPORT_FORMATS = {"excel": ExportFormat("cp1251", ";"), "utf8": ExportFormat("utf-8-sig", ",")}


@dataclass(frozen=True)
class DecodedFile:
    text: str
    encoding: str  # "utf-8", "utf-8-sig" or "cp1251"
    delimiter: str  # "," or ";"

    def describe(self) -> str:
        encoding = {
            "utf-8": gettext("UTF-8"),
            "utf-8-sig": gettext("UTF-8 with a byte-order mark"),
            "cp1251": gettext("Windows-1251"),
        }[self.encoding]
        delimiter = gettext("semicolons") if self.delimiter == ";" else gettext("commas")
        return gettext("Read as %(encoding)s, columns separated by %(delimiter)s.") % {
            "encoding": encoding,
            "delimiter": delimiter,
        }


def decode_upload(raw: bytes) -> DecodedFile:
    """The file's text, encoding and separator: UTF-8 if it decodes so (BOM or not), else Windows-1251;
    the separator is the one of "," and ";" that splits the header line into more columns."""
    if raw.startswith(b"\xef\xbb\xbf"):
        encoding = "utf-8-sig"
    else:
        try:
            raw.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            encoding = "cp1251"
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError:
        raise RefusedError(gettext("The file is neither UTF-8 nor Windows-1251 text."), field="csv_file") from None
    header = text.lstrip("\ufeff").split("\n", 1)[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    return DecodedFile(text, encoding, delimiter)


@dataclass
class ImportRow:
    line: int
    local_part: str
    display_name: str
    password: str = field(repr=False)
    quota_kb: int | None
    errors: list[str]
    quota_messages: int | None = None
    is_locked: bool = False

    @property
    def password_generated(self) -> bool:
        """No password in the file (an export has none): the mailbox gets a random one."""
        return not self.password


def whole_number(raw: str, column: str, errors: list[str]) -> int | None:
    if not raw:
        return None
    try:
        number = int(raw)
        if number < 0:
            raise ValueError
    except ValueError:
        errors.append(gettext('%(column)s "%(value)s" is not a whole number.') % {"column": column, "value": raw})
        return None
    return number


def parse_csv(text: str, delimiter: str = ",") -> list[ImportRow]:
    """Read the rows of an import file; a header row with the column names is required."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")), delimiter=delimiter)
    fields = [name.strip().lower() for name in reader.fieldnames or []]
    if "local_part" not in fields or "password" not in fields:
        raise RefusedError(
            gettext("The first line must name the columns: %(columns)s.") % {"columns": ", ".join(IMPORT_COLUMNS)},
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
        errors: list[str] = []
        quota = whole_number((record.get("quota_kb") or "").strip(), "quota_kb", errors)
        quota_messages = whole_number((record.get("quota_messages") or "").strip(), "quota_messages", errors)
        locked = (record.get("is_locked") or "").strip().lower()
        if locked not in ("", "0", "1", "yes", "no", "true", "false"):
            errors.append(gettext('is_locked "%(value)s" is neither 0 nor 1.') % {"value": locked})
        rows.append(
            ImportRow(
                line=number,
                local_part=(record.get("local_part") or "").strip(),
                display_name=(record.get("display_name") or "").strip(),
                password=record.get("password") or "",
                quota_kb=quota,
                errors=errors,
                quota_messages=quota_messages or None,
                is_locked=locked in ("1", "yes", "true"),
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
        if not row.password_generated:
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
                mailbox = services.add_mailbox(
                    domain,
                    row.local_part,
                    row.password or unknown_password(),
                    display_name=row.display_name,
                    quota_bytes=row.quota_kb * 1024 if row.quota_kb else None,
                    quota_messages=row.quota_messages,
                    actor=actor,
                    acting_user=acting_user,
                )
                if row.is_locked:
                    services.set_mailbox_lock(mailbox, True, actor=actor)
            except RefusedError as exc:
                raise RefusedError(
                    gettext("Line %(line)d: %(reason)s") % {"line": row.line, "reason": exc.message}, field="csv_file"
                ) from None
    return len(rows)


def unknown_password() -> str:
    """A password that meets the policy and that nobody is told: set the real one afterwards."""
    return f"Aa1-{secrets.token_urlsafe(24)}"


def export_csv(mailboxes, export_format: ExportFormat = EXPORT_FORMATS["utf8"]) -> bytes:
    """The mailboxes as a CSV file in `export_format`; passwords are never exported (the column stays
    empty). A character Windows-1251 lacks becomes "?" in the Excel format: use UTF-8 for such names."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=export_format.delimiter, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    for mailbox in mailboxes:
        usage = mailbox_usage(mailbox)
        writer.writerow(
            [
                mailbox.local_part,
                "",
                mailbox.display_name,
                mailbox.quota_bytes // 1024 if mailbox.quota_bytes else "",
                mailbox.quota_messages or "",
                int(mailbox.is_locked),
                int(mailbox.is_catch_all),
                mailbox.address,
                (usage.size_bytes + 1023) // 1024,
                usage.message_count,
                mailbox.last_logon_at.isoformat() if mailbox.last_logon_at else "",
                mailbox.last_logon_from,
            ]
        )
    return out.getvalue().encode(export_format.encoding, errors="replace")
