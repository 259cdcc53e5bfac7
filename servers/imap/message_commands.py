"""The selected state's commands (RFC 9051 6.4): FETCH, STORE, SEARCH, COPY, MOVE, EXPUNGE and their UID forms."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from servers.imap import fetch, mime, responses
from servers.imap.fetch_cache import FetchCache
from servers.imap.mailbox_commands import MailboxCommands, folder_name, parse_flags
from servers.imap.parser import (
    Command,
    CommandSyntaxError,
    Token,
    arguments,
    as_atom,
    parse_sequence_set,
)
from servers.imap.search import Candidate, UnsupportedCharsetError, compact_sequence_set, esearch_response, parse_search
from servers.imap.state import CommandRefusedError, Done, SelectedFolder, fetch_flags_line
from servers.imap.store_api import Folder, MessageRecord, NoSuchFolderError

_STORE_MODES = {"FLAGS": "set", "+FLAGS": "add", "-FLAGS": "remove"}
_UID_COMMANDS = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE"})


def _loaders(folder: Folder, uid: int) -> tuple[Callable[[], bytes], Callable[[], bytes]]:
    return (lambda: mime.crlf(folder.read(uid))), (lambda: folder.read_header(uid))


def _envelope_source(folder: Folder, cache: FetchCache) -> Callable[[MessageRecord], bytes]:
    """A message's ENVELOPE: from the folder's cache, else rendered from its header (and kept)."""
    get = cache.get

    def envelope_of(record: MessageRecord) -> bytes:
        value = get(record.uid)
        if value is None:
            value = mime.envelope(mime.crlf(folder.read_header(record.uid))).encode("utf-8")
            cache.put(record.uid, value)
        return value

    return envelope_of


def _uid_set(uids: Sequence[int]) -> str:
    # COPYUID's two sets correspond in order; ranges keep that only when both ascend.
    return compact_sequence_set(uids) if list(uids) == sorted(uids) else ",".join(map(str, uids))


class MessageCommands(MailboxCommands):
    def _selected(self) -> SelectedFolder:
        assert self.selected is not None
        return self.selected

    def _writable(self) -> SelectedFolder:
        selected = self._selected()
        if selected.read_only:
            raise CommandRefusedError("NO", responses.NO_READ_ONLY)
        return selected

    def imap_CHECK(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        return Done()

    def imap_CLOSE(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        selected = self._selected()
        if not selected.read_only:
            selected.folder.expunge()  # RFC 9051 6.4.1: silently, no EXPUNGE responses
        self._deselect()
        return Done()

    def imap_UNSELECT(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        self._deselect()
        return Done()

    def imap_EXPUNGE(self, command: Command) -> Done:
        arguments(command.args, 0, 0)
        return self._expunge(None)

    def _expunge(self, uids: list[int] | None) -> Done:
        selected = self._writable()
        selected.note_expunged(selected.folder.expunge(uids))
        return Done(selected.flush_expunged())

    def imap_UID(self, command: Command) -> Done:
        if not command.args:
            raise CommandSyntaxError("UID needs a command")
        name = as_atom(command.args[0]).upper()
        args = command.args[1:]
        if name not in _UID_COMMANDS:
            raise CommandSyntaxError("Unknown UID command")
        if name == "FETCH":
            return self._fetch(args, by_uid=True)
        if name == "STORE":
            return self._store(args, by_uid=True)
        if name in ("COPY", "MOVE"):
            return self._copy(args, by_uid=True, move=name == "MOVE")
        if name == "SEARCH":
            return self._search(command.tag, args, by_uid=True)
        (token,) = arguments(args, 1, 1)  # RFC 4315 2.1 UID EXPUNGE
        selected = self._writable()
        return self._expunge([record.uid for _, record in selected.select(parse_sequence_set(token), by_uid=True)])

    def imap_FETCH(self, command: Command) -> Done:
        return self._fetch(command.args, by_uid=False)

    def _fetch(self, args: list[Token], *, by_uid: bool) -> Done:
        set_token, items_token = arguments(args, 2, 2)
        items = fetch.parse_fetch_items(items_token, uid=by_uid)
        selected = self._selected()
        targets = selected.select(parse_sequence_set(set_token), by_uid=by_uid)
        mark_seen = not selected.read_only and any(item.sets_seen for item in items)
        with_flags = [*items, fetch.FetchItem("FLAGS")] if not any(i.name == "FLAGS" for i in items) else items
        folder = selected.folder
        derived = fetch.Derived(folder.fetch_cache("ENVELOPE"), folder.fetch_cache("BODYSTRUCTURE"))
        if fetch.is_fast(items):
            return Done(fetch.render_many(items, targets, _envelope_source(folder, derived.envelopes)))
        out = bytearray()
        for number, record in targets:
            load_message, load_header = _loaders(folder, record.uid)
            render_items = items
            try:
                if mark_seen and "\\Seen" not in record.flags:
                    # RFC 9051 6.4.5: BODY[] sets \Seen, and the FETCH response then shows the new flags.
                    selected.adopt_flags(folder.store_flags([record.uid], frozenset({"\\Seen"}), "add"))
                    record = selected.view[number - 1]
                    render_items = with_flags
                data = fetch.render(render_items, record, load_message, load_header, derived)
            except KeyError:
                continue  # expunged by another session meanwhile (RFC 9051 7.5.1 allows leaving it out)
            except fetch.UnknownTransferEncodingError:
                raise CommandRefusedError("NO", responses.NO_UNKNOWN_CTE, untagged=bytes(out)) from None
            out += b"* %d FETCH " % number + data + b"\r\n"
        return Done(bytes(out))

    def imap_STORE(self, command: Command) -> Done:
        return self._store(command.args, by_uid=False)

    def _store(self, args: list[Token], *, by_uid: bool) -> Done:
        set_token, item_token, *flag_tokens = arguments(args, 3, 50_000)
        item = as_atom(item_token).upper()
        silent = item.endswith(".SILENT")
        mode = _STORE_MODES.get(item.removesuffix(".SILENT"))
        if mode is None:
            raise CommandSyntaxError("Expected FLAGS, +FLAGS or -FLAGS")
        flags = parse_flags(
            flag_tokens[0] if len(flag_tokens) == 1 and isinstance(flag_tokens[0], list) else flag_tokens
        )
        selected = self._writable()
        targets = selected.select(parse_sequence_set(set_token), by_uid=by_uid)
        if not targets:
            return Done()
        selected.adopt_flags(selected.folder.store_flags([record.uid for _, record in targets], flags, mode))
        if silent:
            return Done()
        out = b"".join(fetch_flags_line(n, selected.view[n - 1], with_uid=by_uid) for n, _ in targets)
        return Done(out)

    def imap_COPY(self, command: Command) -> Done:
        return self._copy(command.args, by_uid=False, move=False)

    def imap_MOVE(self, command: Command) -> Done:
        return self._copy(command.args, by_uid=False, move=True)

    def _copy(self, args: list[Token], *, by_uid: bool, move: bool) -> Done:
        set_token, target_token = arguments(args, 2, 2)
        target = folder_name(target_token)
        selected = self._writable() if move else self._selected()
        targets = selected.select(parse_sequence_set(set_token), by_uid=by_uid)
        if not targets:
            return Done()
        uids = [record.uid for _, record in targets]
        transfer = selected.folder.move_to if move else selected.folder.copy_to
        try:
            uidvalidity, pairs = transfer(uids, target)
        except NoSuchFolderError:
            raise CommandRefusedError("NO", responses.NO_TRYCREATE) from None
        copyuid = ""
        if pairs:
            sources, copies = zip(*pairs, strict=True)
            copyuid = f"[COPYUID {uidvalidity} {_uid_set(sources)} {_uid_set(copies)}]"
        if not move:
            return Done(text=f"{copyuid} COPY completed".strip())
        # RFC 6851 4.3: COPYUID comes untagged, before the EXPUNGE responses.
        untagged = responses.untagged(f"OK {copyuid} Moved".replace("  ", " ")) if copyuid else b""
        selected.note_expunged([source for source, _ in pairs])
        return Done(untagged + selected.flush_expunged(), "MOVE completed")

    def imap_SEARCH(self, command: Command) -> Done:
        return self._search(command.tag, command.args, by_uid=False)

    def _search(self, tag: str, args: list[Token], *, by_uid: bool) -> Done:
        selected = self._selected()
        saved = frozenset(selected.saved_uids)
        try:
            request = parse_search(
                args, message_count=len(selected.view), largest_uid=selected.largest_uid(), saved_uids=saved
            )
        except UnsupportedCharsetError:
            raise CommandRefusedError("NO", responses.NO_BAD_CHARSET) from None
        options = request.return_options
        if options is not None and "SAVE" in options:
            selected.saved_uids = []  # RFC 5182 2.1: a failed SEARCH leaves "$" empty
        found: list[MessageRecord] = []
        numbers: list[int] = []
        for number, record in enumerate(selected.view, start=1):
            load_message, load_header = _loaders(selected.folder, record.uid)
            try:
                if request.predicate(Candidate(number, record, load_message, load_header)):
                    found.append(record)
                    numbers.append(number)
            except KeyError:
                continue  # gone meanwhile
        results = [record.uid for record in found] if by_uid else numbers
        if options is not None and "SAVE" in options:
            selected.saved_uids = _saved_result([record.uid for record in found], options)
            if options == {"SAVE"}:
                return Done()  # RFC 5182 2.1: SAVE alone returns no ESEARCH
        if options is not None or self.rev2_enabled:
            return Done(responses.untagged(esearch_response(tag, results, options or frozenset(), uid=by_uid)))
        return Done(responses.untagged(" ".join(["SEARCH", *map(str, results)])))


def _saved_result(uids: list[int], options: frozenset[str]) -> list[int]:
    # RFC 5182 2.4: with MIN and/or MAX (and neither ALL nor COUNT), only those are saved.
    if not uids or options & {"ALL", "COUNT"} or not options & {"MIN", "MAX"}:
        return uids
    chosen = set()
    if "MIN" in options:
        chosen.add(uids[0])
    if "MAX" in options:
        chosen.add(uids[-1])
    return sorted(chosen)
