"""The authenticated state's commands (RFC 9051 6.3): folders, LIST, STATUS, APPEND, ENABLE, QUOTA."""

from __future__ import annotations

import datetime
import re

from servers.imap import mutf7, responses
from servers.imap.parser import (
    Command,
    CommandSyntaxError,
    Literal,
    String,
    Token,
    arguments,
    as_astring,
    as_atom,
    as_list,
    is_atom,
)
from servers.imap.state import CommandRefusedError, Done, SelectedFolder, SessionState
from servers.imap.store_api import (
    HIERARCHY_DELIMITER,
    INBOX,
    SYSTEM_FLAGS,
    Account,
    FolderInfo,
    NoSuchFolderError,
)

_SELECTION_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
_ALONE = frozenset({"RECURSIVEMATCH", "REMOTE"})
_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})
_STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "RECENT", "SIZE")
_DATE_TIME = re.compile(
    r"([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})\Z"
)
# RFC 9051 6.1.1: what ENABLE can switch on here.
ENABLEABLE = {"IMAP4REV2": "IMAP4rev2"}
PERMANENT_FLAGS = "(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"


def folder_name(token: Token) -> str:
    """A folder name from the wire: INBOX in any case is INBOX; anything else must be modified UTF-7."""
    name = as_astring(token)
    if name.upper() == INBOX:
        return INBOX
    if name.upper().startswith(INBOX + HIERARCHY_DELIMITER):
        name = INBOX + name[len(INBOX) :]
    if not name or not mutf7.is_valid(name):
        raise CommandRefusedError("NO", "[CANNOT] Folder names are modified UTF-7 (RFC 3501 5.1.3)")
    # Each level becomes a directory name: no empty levels, nothing a file system reads as a path.
    if "/" in name or "\\" in name or any(level in ("", "..") for level in name.split(HIERARCHY_DELIMITER)):
        raise CommandRefusedError("NO", "[CANNOT] Invalid folder name")
    return name


def parse_date_time(token: Token) -> float:
    """RFC 3501 date-time ("02-Dec-2026 14:40:08 +0100") as seconds since the epoch."""
    if not isinstance(token, String):
        raise CommandSyntaxError("Invalid date-time")
    match = _DATE_TIME.match(token)
    if match is None or match.group(2).lower() not in responses.MONTH_NUMBERS:
        raise CommandSyntaxError("Invalid date-time")
    day, _, year, hour, minute, second, sign, zone_h, zone_m = match.groups()
    try:
        moment = datetime.datetime(
            int(year),
            responses.MONTH_NUMBERS[match.group(2).lower()],
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=datetime.UTC,
        )
    except ValueError:
        raise CommandSyntaxError("Invalid date-time") from None
    seconds = int(moment.timestamp())
    offset = (int(zone_h) * 60 + int(zone_m)) * 60
    return float(seconds - offset if sign == "+" else seconds + offset)


def parse_flags(token: Token) -> frozenset[str]:
    """A flag list for STORE/APPEND: system flags (any case, written canonically) and keyword atoms."""
    tokens = token if isinstance(token, list) else [token]
    canonical = {flag.lower(): flag for flag in SYSTEM_FLAGS}
    flags = set()
    for item in tokens:
        flag = as_atom(item)
        if flag.startswith("\\"):
            if flag.lower() not in canonical:
                raise CommandSyntaxError(f"Invalid flag {flag[:40]}")
            flags.add(canonical[flag.lower()])
        elif not flag or any(c in flag for c in "%*]"):
            raise CommandSyntaxError("Invalid keyword")
        else:
            flags.add(flag)
    return frozenset(flags)


MAX_LIST_PATTERN_LENGTH = 1024


class ListPattern:
    """A LIST mailbox pattern (RFC 9051 6.3.9): "*" matches anything, "%" anything but the delimiter.

    Matched by walking the pattern's states along the name, so the cost is at most pattern x name
    length: a regular expression of many ".*" would backtrack without bound on a crafted pattern.
    """

    def __init__(self, reference: str, pattern: str) -> None:
        text = reference + pattern
        if len(text) > MAX_LIST_PATTERN_LENGTH:
            raise CommandSyntaxError("LIST pattern too long")
        # INBOX is case-insensitive: "inbox" and "Inbox.%" find it and its children.
        if text[: len(INBOX)].upper() == INBOX and text[len(INBOX) : len(INBOX) + 1] in ("", HIERARCHY_DELIMITER):
            text = INBOX + text[len(INBOX) :]
        self.text = text

    def _closure(self, states: set[int]) -> set[int]:
        pending = list(states)
        while pending:
            state = pending.pop()
            if state < len(self.text) and self.text[state] in "*%" and state + 1 not in states:
                states.add(state + 1)
                pending.append(state + 1)
        return states

    def matches(self, name: str) -> bool:
        text = self.text
        states = self._closure({0})
        for char in name:
            following = set()
            for state in states:
                if state == len(text):
                    continue
                wanted = text[state]
                if wanted == "*" or (wanted == "%" and char != HIERARCHY_DELIMITER):
                    following.add(state)
                elif wanted == char:
                    following.add(state + 1)
            if not following:
                return False
            states = self._closure(following)
        return len(text) in states


class MailboxCommands:
    account: Account | None
    selected: SelectedFolder | None
    state: SessionState
    rev2_enabled: bool

    def _account(self) -> Account:
        assert self.account is not None
        return self.account

    def _deselect(self) -> None:
        selected, self.selected = self.selected, None
        if self.state is SessionState.SELECTED:
            self.state = SessionState.AUTHENTICATED
        if selected is not None:
            selected.folder.close()

    def imap_ENABLE(self, command: Command) -> Done:
        if not command.args:
            raise CommandSyntaxError("ENABLE needs a capability")
        enabled = [ENABLEABLE[as_atom(token).upper()] for token in command.args if as_atom(token).upper() in ENABLEABLE]
        if enabled:
            self.rev2_enabled = True
        return Done(responses.untagged(" ".join(["ENABLED", *dict.fromkeys(enabled)])))

    def imap_NAMESPACE(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        return Done(responses.untagged(f'NAMESPACE (("" "{HIERARCHY_DELIMITER}")) NIL NIL'))

    def imap_SELECT(self, command: Command) -> Done:
        return self._select(command, read_only=False)

    def imap_EXAMINE(self, command: Command) -> Done:
        return self._select(command, read_only=True)

    def _select(self, command: Command, *, read_only: bool) -> Done:
        (token,) = arguments(command.args, 1, 1)
        name = folder_name(token)
        out = bytearray()
        if self.selected is not None:
            self._deselect()
            out += responses.untagged("OK [CLOSED] Previous folder closed")  # RFC 9051 7.1
        selected = SelectedFolder(self._account().open_folder(name, read_only=read_only))
        self.selected, self.state = selected, SessionState.SELECTED
        view = selected.view
        keywords = sorted({flag for record in view for flag in record.flags if not flag.startswith("\\")})
        out += responses.untagged("FLAGS " + responses.parenthesised([*sorted(SYSTEM_FLAGS), *keywords]))
        permanent = "()" if selected.read_only else PERMANENT_FLAGS
        out += responses.untagged(f"OK [PERMANENTFLAGS {permanent}] Flags permitted")
        out += responses.untagged(f"{len(view)} EXISTS")
        if not self.rev2_enabled:
            out += responses.untagged("0 RECENT")
            unseen = next((n for n, r in enumerate(view, start=1) if "\\Seen" not in r.flags), None)
            if unseen is not None:
                out += responses.untagged(f"OK [UNSEEN {unseen}] First unseen")
        out += responses.untagged(f"OK [UIDVALIDITY {selected.folder.uidvalidity}] UIDs valid")
        out += responses.untagged(f"OK [UIDNEXT {selected.folder.uidnext}] Predicted next UID")
        if self.rev2_enabled:
            out += responses.untagged(f'LIST () "{HIERARCHY_DELIMITER}" {responses.astring(name)}')
        mode = "[READ-ONLY]" if selected.read_only else "[READ-WRITE]"
        return Done(bytes(out), f"{mode} {command.name} completed")

    def imap_CREATE(self, command: Command) -> Done:
        (token,) = arguments(command.args, 1, 1)
        # RFC 9051 6.3.4: a trailing delimiter only says the client means to create children.
        name = folder_name(String(as_astring(token).removesuffix(HIERARCHY_DELIMITER)))
        if name == INBOX:
            raise CommandRefusedError("NO", "[ALREADYEXISTS] INBOX always exists")
        if any(char in name for char in "%*"):
            raise CommandRefusedError("NO", "[CANNOT] Wildcards are not allowed in folder names")
        self._account().create_folder(name)
        return Done()

    def imap_DELETE(self, command: Command) -> Done:
        (token,) = arguments(command.args, 1, 1)
        name = folder_name(token)
        if name == INBOX:
            raise CommandRefusedError("NO", "[CANNOT] INBOX cannot be deleted")
        self._account().delete_folder(name)
        return Done()

    def imap_RENAME(self, command: Command) -> Done:
        old, new = (folder_name(token) for token in arguments(command.args, 2, 2))
        if new == INBOX:
            raise CommandRefusedError("NO", "[ALREADYEXISTS] INBOX always exists")
        if any(char in new for char in "%*"):
            raise CommandRefusedError("NO", "[CANNOT] Wildcards are not allowed in folder names")
        self._account().rename_folder(old, new)
        return Done()

    def imap_SUBSCRIBE(self, command: Command) -> Done:
        (token,) = arguments(command.args, 1, 1)
        self._account().subscribe(folder_name(token), True)
        return Done()

    def imap_UNSUBSCRIBE(self, command: Command) -> Done:
        (token,) = arguments(command.args, 1, 1)
        self._account().subscribe(folder_name(token), False)
        return Done()

    def imap_LIST(self, command: Command) -> Done:
        args = list(command.args)
        selection: set[str] = set()
        if args and isinstance(args[0], list):
            selection = {as_atom(option).upper() for option in args.pop(0)}
            # RFC 5258 3.1: RECURSIVEMATCH only qualifies another option (REMOTE does not count).
            if not selection <= _SELECTION_OPTIONS or ("RECURSIVEMATCH" in selection and selection <= _ALONE):
                raise CommandSyntaxError("Unsupported LIST selection option")
        if len(args) < 2:
            raise CommandSyntaxError("LIST needs a reference and a pattern")
        reference = as_astring(args[0])
        patterns = [as_astring(p) for p in args[1]] if isinstance(args[1], list) else [as_astring(args[1])]
        returns, status_items = self._list_return_options(args[2:])
        if patterns == [""] and not selection:
            # RFC 9051 6.3.9: an empty pattern asks for the delimiter and the root.
            return Done(responses.untagged(f'LIST (\\Noselect) "{HIERARCHY_DELIMITER}" ""'))
        if "SUBSCRIBED" in selection:
            returns.add("SUBSCRIBED")
        compiled = [ListPattern(reference, pattern) for pattern in patterns]
        folders = self._account().list_folders()
        # RFC 5258 3.5: with RECURSIVEMATCH, a parent of a subscribed folder is listed with CHILDINFO.
        childinfo_wanted = {"RECURSIVEMATCH", "SUBSCRIBED"} <= selection
        subscribed = [info.name for info in folders if info.subscribed]
        out = bytearray()
        for info in folders:
            if not any(pattern.matches(info.name) for pattern in compiled):
                continue
            childinfo = childinfo_wanted and any(
                name.startswith(info.name + HIERARCHY_DELIMITER) for name in subscribed
            )
            if "SUBSCRIBED" in selection and not info.subscribed and not childinfo:
                continue
            if "SPECIAL-USE" in selection and info.special_use is None:
                continue
            extended = ' ("CHILDINFO" ("SUBSCRIBED"))' if childinfo else ""
            name = responses.astring(info.name)
            out += responses.untagged(f'LIST {self._attributes(info, returns)} "." {name}{extended}')
            if status_items and info.selectable:
                out += self._status_line(info.name, status_items, tolerate_errors=True)
        return Done(bytes(out))

    @staticmethod
    def _list_return_options(rest: list[Token]) -> tuple[set[str], list[str]]:
        if not rest:
            return set(), []
        if len(rest) != 2 or not is_atom(rest[0], "RETURN"):
            raise CommandSyntaxError("Expected RETURN (options)")
        options = as_list(rest[1])
        returns: set[str] = set()
        status_items: list[str] = []
        position = 0
        while position < len(options):
            option = as_atom(options[position]).upper()
            if option not in _RETURN_OPTIONS:
                raise CommandSyntaxError("Unsupported LIST return option")
            if option == "STATUS":
                position += 1
                if position >= len(options):
                    raise CommandSyntaxError("STATUS needs items")
                status_items = _status_items(options[position])
            returns.add(option)
            position += 1
        return returns, status_items

    def _attributes(self, info: FolderInfo, returns: set[str]) -> str:
        attributes = []
        if not info.selectable:
            # A parent that only exists through its children: RFC 9051 7.3.1 calls it \NonExistent.
            attributes.append("\\NonExistent" if self.rev2_enabled else "\\Noselect")
        attributes.append("\\HasChildren" if info.has_children else "\\HasNoChildren")
        if info.special_use is not None:
            attributes.append(info.special_use.value)
        if "SUBSCRIBED" in returns and info.subscribed:
            attributes.append("\\Subscribed")
        return responses.parenthesised(attributes)

    def imap_LSUB(self, command: Command) -> Done:
        reference, pattern = (as_astring(token) for token in arguments(command.args, 2, 2))
        compiled = ListPattern(reference, pattern)
        out = bytearray()
        for info in self._account().list_folders():
            if info.subscribed and compiled.matches(info.name):
                attributes = "()" if info.selectable else "(\\Noselect)"
                out += responses.untagged(f'LSUB {attributes} "." {responses.astring(info.name)}')
        return Done(bytes(out))

    def imap_STATUS(self, command: Command) -> Done:
        token, items = arguments(command.args, 2, 2)
        return Done(self._status_line(folder_name(token), _status_items(items)))

    def _status_line(self, name: str, items: list[str], *, tolerate_errors: bool = False) -> bytes:
        try:
            status = self._account().status(name)
        except NoSuchFolderError:
            if tolerate_errors:
                return b""
            raise
        values = {
            "MESSAGES": status.messages,
            "UIDNEXT": status.uidnext,
            "UIDVALIDITY": status.uidvalidity,
            "UNSEEN": status.unseen,
            "RECENT": 0,
            "SIZE": status.size_octets,
        }
        if "DELETED" in items:
            values["DELETED"] = self._deleted_count(name)
        pairs = " ".join(f"{item} {values[item]}" for item in items)
        return responses.untagged(f"STATUS {responses.astring(name)} ({pairs})")

    def _deleted_count(self, name: str) -> int:
        """RFC 9051 STATUS DELETED: FolderStatus does not count it, so look at the flags (rarely asked)."""
        if self.selected is not None and self.selected.folder.name == name:
            return sum(1 for record in self.selected.view if "\\Deleted" in record.flags)
        folder = self._account().open_folder(name, read_only=True)
        try:
            return sum(1 for record in folder.messages() if "\\Deleted" in record.flags)
        finally:
            folder.close()

    def imap_APPEND(self, command: Command) -> Done:
        args = arguments(command.args, 2, 4)
        name = folder_name(args[0])
        message = args[-1]
        if not isinstance(message, Literal):
            raise CommandSyntaxError("APPEND needs the message as a literal")
        flags: frozenset[str] = frozenset()
        internal_date = None
        for token in args[1:-1]:
            if isinstance(token, list):
                flags = parse_flags(token)
            else:
                internal_date = parse_date_time(token)
        try:
            uidvalidity, uid = self._account().append(name, bytes(message), flags, internal_date)
        except NoSuchFolderError:
            raise CommandRefusedError("NO", responses.NO_TRYCREATE) from None
        return Done(text=f"[APPENDUID {uidvalidity} {uid}] APPEND completed")

    def imap_GETQUOTAROOT(self, command: Command) -> Done:
        (token,) = arguments(command.args, 1, 1)
        name = folder_name(token)
        self._account().status(name)  # NONEXISTENT for a folder that is not there
        return Done(responses.untagged(f'QUOTAROOT {responses.astring(name)} ""') + self._quota_line())

    def imap_GETQUOTA(self, command: Command) -> Done:
        (token,) = arguments(command.args, 1, 1)
        if as_astring(token) != "":
            raise CommandRefusedError("NO", '[NONEXISTENT] The only quota root is ""')
        return Done(self._quota_line())

    def imap_SETQUOTA(self, command: Command) -> Done:
        raise CommandRefusedError("NO", "[NOPERM] Quotas are set in the console")

    def _quota_line(self) -> bytes:
        quota = self._account().quota()
        resources = []
        if quota.limit_octets is not None:
            # RFC 9208 5.1: STORAGE counts units of 1024 octets.
            resources.append(f"STORAGE {-(-quota.used_octets // 1024)} {quota.limit_octets // 1024}")
        return responses.untagged(f'QUOTA "" ({" ".join(resources)})')


def _status_items(token: Token) -> list[str]:
    items = [as_atom(item).upper() for item in as_list(token)]
    if not items or not set(items) <= set(_STATUS_ITEMS):
        raise CommandSyntaxError("Unsupported STATUS item")
    return items
