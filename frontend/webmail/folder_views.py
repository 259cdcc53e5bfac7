"""Webmail pages that organise mail: folders (create, rename, delete), move, copy, Trash and undo, flags.

Each view parses the request and calls `folders` (which goes through the IMAP store); every change
is a POST with the CSRF token; anything named in a request is looked up within the signed-in mailbox
only (another mailbox's message or a folder that does not exist is a 404). Deleting for ever and
emptying Trash show a confirmation first, as does deleting a folder that holds messages.
"""

from __future__ import annotations

from django.contrib import messages
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext, ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from servers.imap.store_api import StoreError

from . import folders, index, session
from .forms import CreateFolderForm, RenameFolderForm
from .models import TRASH, MessageIndex
from .views import UNDO_SESSION_KEY, _page_context, folder_slug

UNDO_SALT = "mailconsole.webmail.undo"
UNDO_MAX_AGE_S = 600
MAX_SELECTED = 500
MAX_ID_DIGITS = 18


def _folder_or_404(request: HttpRequest, name: str) -> str:
    try:
        return folders.existing_folder(request.mailbox, name)
    except StoreError:
        raise Http404("No such folder.") from None


def _selected(request: HttpRequest) -> list[MessageIndex]:
    """The messages posted as `ids`, of this mailbox only (all in one folder: the first one's)."""
    # Digits only, and few enough for a database integer: anything else is no message of ours.
    ids = [int(pk) for pk in request.POST.getlist("ids")[:MAX_SELECTED] if pk.isdigit() and len(pk) <= MAX_ID_DIGITS]
    rows = list(MessageIndex.objects.filter(mailbox_id=request.mailbox.pk, pk__in=ids).order_by("pk"))
    if len(rows) != len(set(ids)):
        raise Http404("No such message.")
    return [row for row in rows if row.folder == rows[0].folder] if rows else []


def _back(request: HttpRequest, folder: str) -> HttpResponse:
    return redirect("webmail:folder", folder_slug(folder))


def _offer_undo(request: HttpRequest, moved: list[MessageIndex], back_to: str) -> None:
    """Remember, for the next page only, how to move these messages back from Trash."""
    token = signing.dumps(
        {"mailbox": request.mailbox.pk, "ids": [row.pk for row in moved], "to": back_to}, salt=UNDO_SALT
    )
    request.session[UNDO_SESSION_KEY] = {"token": token, "count": len(moved)}


def _move_to_trash(request: HttpRequest, rows: list[MessageIndex]) -> HttpResponse:
    source = rows[0].folder
    try:
        moved = folders.move_messages(request.mailbox, rows, TRASH)
    except folders.MailboxBusyError:
        messages.error(
            request,
            gettext(
                "The mailbox is busy: a mail program is connected to it over POP3. Try again when it has finished."
            ),
        )
        return redirect("webmail:read", rows[0].pk) if len(rows) == 1 else _back(request, source)
    messages.success(
        request,
        ngettext("The message was moved to Trash.", "%(count)d messages were moved to Trash.", len(moved))
        % {"count": len(moved)},
    )
    if moved:
        _offer_undo(request, moved, source)
    return _back(request, source)


def _confirm(
    request: HttpRequest, *, title: str, text: str, action: str, fields: dict, button: str, cancel_url: str
) -> HttpResponse:
    return render(
        request,
        "webmail/confirm.html",
        _page_context(
            request,
            confirm_title=title,
            confirm_text=text,
            confirm_action=action,
            confirm_fields=fields,
            confirm_button=button,
            cancel_url=cancel_url,
        ),
    )


def _delete_for_ever(request: HttpRequest, rows: list[MessageIndex]) -> HttpResponse:
    if request.POST.get("confirm") != "1":
        return _confirm(
            request,
            title=gettext("Delete for ever?"),
            text=ngettext(
                "The message will be deleted for ever. This cannot be undone.",
                "%(count)d messages will be deleted for ever. This cannot be undone.",
                len(rows),
            )
            % {"count": len(rows)},
            action=reverse("webmail:act"),
            fields={"action": "forever", "ids": [row.pk for row in rows]},
            button=gettext("Delete for ever"),
            cancel_url=reverse("webmail:folder", args=[folder_slug(rows[0].folder)]),
        )
    folder = rows[0].folder
    count = folders.expunge_messages(request.mailbox, rows)
    messages.success(
        request,
        ngettext("The message was deleted for ever.", "%(count)d messages were deleted for ever.", count)
        % {"count": count},
    )
    return _back(request, folder)


def _transfer(request: HttpRequest, rows: list[MessageIndex], *, copy: bool) -> HttpResponse:
    source = rows[0].folder
    target = _folder_or_404(request, request.POST.get("target", ""))
    try:
        done = (folders.copy_messages if copy else folders.move_messages)(request.mailbox, rows, target)
    except folders.MailboxBusyError:
        messages.error(request, gettext("The mailbox is busy: a mail program is connected to it over POP3."))
        return _back(request, source)
    except StoreError as error:  # over quota, or the folder went meanwhile
        messages.error(request, gettext("Nothing was changed: %(reason)s.") % {"reason": error.text})
        return _back(request, source)
    name = folders.display_name(target)
    if copy:
        text = ngettext(
            "The message was copied to %(folder)s.", "%(count)d messages were copied to %(folder)s.", len(done)
        )
    else:
        text = ngettext(
            "The message was moved to %(folder)s.", "%(count)d messages were moved to %(folder)s.", len(done)
        )
    messages.success(request, text % {"count": len(done), "folder": name})
    return _back(request, source)


@require_POST
@session.mailbox_required
def act(request: HttpRequest) -> HttpResponse:
    """What the list's and the message page's buttons do to the selected messages."""
    rows = _selected(request)
    action = request.POST.get("action", "")
    if not rows:
        messages.info(request, gettext("Select messages first."))
        return _back(request, _folder_or_404(request, request.POST.get("folder", "INBOX")))
    if action == "move":
        return _transfer(request, rows, copy=False)
    if action == "copy":
        return _transfer(request, rows, copy=True)
    if action == "trash":
        if rows[0].folder == TRASH:
            return _delete_for_ever(request, rows)
        return _move_to_trash(request, rows)
    if action == "forever":
        if rows[0].folder != TRASH:  # for ever only from Trash: elsewhere Delete is the undoable move
            raise Http404("Only messages in Trash are deleted for ever.")
        return _delete_for_ever(request, rows)
    if action in ("read", "unread", "flag", "unflag"):
        letter = index.SEEN_FLAG if action in ("read", "unread") else index.FLAGGED_FLAG
        for row in rows:
            index.set_flag(row, request.mailbox.maildir, letter, action in ("read", "flag"))
        return (
            redirect("webmail:read", rows[0].pk)
            if request.POST.get("back") == "message"
            else _back(request, rows[0].folder)
        )
    raise Http404("No such action.")


@require_POST
@session.mailbox_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    """The message page's Delete: to Trash (with an undo), or for ever (confirmed) when it is in Trash."""
    message = get_object_or_404(MessageIndex, pk=pk, mailbox_id=request.mailbox.pk)
    if message.folder == TRASH:
        return _delete_for_ever(request, [message])
    return _move_to_trash(request, [message])


@require_POST
@session.mailbox_required
def undo(request: HttpRequest) -> HttpResponse:
    """Move the messages just deleted back from Trash to where they were."""
    try:
        plan = signing.loads(request.POST.get("token", ""), salt=UNDO_SALT, max_age=UNDO_MAX_AGE_S)
    except signing.BadSignature:
        raise Http404("Nothing to undo.") from None
    if plan.get("mailbox") != request.mailbox.pk:
        raise Http404("Nothing to undo.")
    rows = list(MessageIndex.objects.for_mailbox(request.mailbox.pk, TRASH).filter(pk__in=plan["ids"]))
    back_to = plan["to"]
    try:
        back_to = folders.existing_folder(request.mailbox, back_to)
        moved = folders.move_messages(request.mailbox, rows, back_to)
    except StoreError as error:
        messages.error(request, gettext("The messages could not be moved back: %(reason)s.") % {"reason": error.text})
        return _back(request, TRASH)
    messages.success(
        request,
        ngettext("The message is back in %(folder)s.", "%(count)d messages are back in %(folder)s.", len(moved))
        % {"count": len(moved), "folder": folders.display_name(back_to)},
    )
    return _back(request, back_to)


@session.mailbox_required
def empty_trash(request: HttpRequest) -> HttpResponse:
    """Delete everything in Trash for ever, after a confirmation."""
    if request.method != "POST" or request.POST.get("confirm") != "1":
        count = folders.message_count(request.mailbox, TRASH)
        return _confirm(
            request,
            title=gettext("Empty Trash?"),
            text=ngettext(
                "The message in Trash will be deleted for ever. This cannot be undone.",
                "The %(count)d messages in Trash will be deleted for ever. This cannot be undone.",
                count,
            )
            % {"count": count},
            action=reverse("webmail:empty_trash"),
            fields={},
            button=gettext("Empty Trash"),
            cancel_url=reverse("webmail:folder", args=[TRASH]),
        )
    count = folders.empty_trash(request.mailbox)
    messages.success(
        request,
        ngettext("Trash is empty: one message was deleted.", "Trash is empty: %(count)d messages were deleted.", count)
        % {"count": count},
    )
    return _back(request, TRASH)


# -- folders ----------------------------------------------------------------------------------------


def _manage_page(
    request: HttpRequest,
    *,
    create_form: CreateFolderForm | None = None,
    rename_form: RenameFolderForm | None = None,
    status: int = 200,
) -> HttpResponse:
    context = _page_context(request)
    parents = [(entry.name, entry.title) for entry in context["folders"] if entry.selectable]
    return render(
        request,
        "webmail/folders.html",
        {
            **context,
            "create_form": create_form or CreateFolderForm(parents=parents),
            "rename_form": rename_form,
            "renaming": rename_form["folder"].value() if rename_form is not None else None,
        },
        status=status,
    )


@never_cache
@session.mailbox_required
def manage_folders(request: HttpRequest) -> HttpResponse:
    return _manage_page(request)


def _parents(request: HttpRequest) -> list[tuple[str, str]]:
    tree, _ = folders.folder_tree(request.mailbox)
    return [(entry.name, entry.title) for entry in tree if entry.selectable]


@require_POST
@session.mailbox_required
def create_folder(request: HttpRequest) -> HttpResponse:
    form = CreateFolderForm(request.POST, parents=_parents(request))
    if form.is_valid():
        try:
            name = folders.create_folder(request.mailbox, form.cleaned_data["name"], form.cleaned_data["parent"])
        except StoreError as error:
            form.add_error("name", gettext("This name cannot be used: %(reason)s.") % {"reason": error.text})
        else:
            messages.success(
                request, gettext("The folder %(folder)s was created.") % {"folder": folders.display_name(name)}
            )
            return redirect("webmail:folders")
    return _manage_page(request, create_form=form, status=400)


@require_POST
@session.mailbox_required
def rename_folder(request: HttpRequest) -> HttpResponse:
    form = RenameFolderForm(request.POST)
    if form.is_valid():
        old = _folder_or_404(request, form.cleaned_data["folder"])
        if folders.is_fixed(old):
            messages.error(request, gettext("%(folder)s cannot be renamed.") % {"folder": folders.display_name(old)})
            return redirect("webmail:folders")
        try:
            new = folders.rename_folder(request.mailbox, old, form.cleaned_data["new_name"])
        except StoreError as error:
            form.add_error(
                "new_name", gettext("This folder cannot be renamed so: %(reason)s.") % {"reason": error.text}
            )
        else:
            messages.success(
                request,
                gettext("%(old)s is now %(new)s.")
                % {"old": folders.display_name(old), "new": folders.display_name(new)},
            )
            return redirect("webmail:folders")
    return _manage_page(request, rename_form=form, status=400)


@require_POST
@session.mailbox_required
def delete_folder(request: HttpRequest) -> HttpResponse:
    name = _folder_or_404(request, request.POST.get("folder", ""))
    if folders.is_fixed(name):
        messages.error(request, gettext("%(folder)s cannot be deleted.") % {"folder": folders.display_name(name)})
        return redirect("webmail:folders")
    count = folders.message_count(request.mailbox, name)
    if count and request.POST.get("confirm") != "1":
        return _confirm(
            request,
            title=gettext("Delete the folder %(folder)s?") % {"folder": folders.display_name(name)},
            text=ngettext(
                "It holds a message, which will be deleted with it.",
                "It holds %(count)d messages, which will be deleted with it.",
                count,
            )
            % {"count": count},
            action=reverse("webmail:delete_folder"),
            fields={"folder": name},
            button=gettext("Delete the folder and its messages"),
            cancel_url=reverse("webmail:folders"),
        )
    try:
        folders.delete_folder(request.mailbox, name)
    except StoreError as error:
        messages.error(request, gettext("The folder was not deleted: %(reason)s.") % {"reason": error.text})
    else:
        messages.success(
            request, gettext("The folder %(folder)s was deleted.") % {"folder": folders.display_name(name)}
        )
    return redirect("webmail:folders")


@require_POST
@session.mailbox_required
def mark(request: HttpRequest, pk: int) -> HttpResponse:
    """Read or unread (`seen`), flagged or not (`flagged`): the Maildir flags IMAP clients see."""
    message = get_object_or_404(MessageIndex, pk=pk, mailbox_id=request.mailbox.pk)
    changes = [
        (letter, request.POST[field] == "1")
        for field, letter in (("seen", index.SEEN_FLAG), ("flagged", index.FLAGGED_FLAG))
        if field in request.POST
    ]
    for letter, on in changes:
        if not index.set_flag(message, request.mailbox.maildir, letter, on):
            MessageIndex.objects.filter(pk=message.pk).delete()
            raise Http404("This message is no longer in the mailbox.")
    if request.POST.get("seen") == "0" and request.POST.get("back") != "message":
        return _back(request, message.folder)
    return redirect("webmail:read", message.pk)
