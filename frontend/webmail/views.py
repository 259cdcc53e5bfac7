"""Webmail pages: sign-in, folders, reading, attachments, compose, delete, flags, password.

Every message URL carries an index id and is looked up within the signed-in mailbox only, so an
id of another mailbox is a 404. Message content (HTML bodies, attachments, source) is never served
as an active document on our origin: HTML goes into a sandboxed frame under a CSP that also
sandboxes it, everything else is text/plain or a download, always with nosniff.
"""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from email.utils import formataddr, getaddresses, make_msgid
from pathlib import Path

import nh3
from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.core.paginator import Paginator
from django.db.models import Count, Sum
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.http import content_disposition_header
from django.utils.translation import gettext, ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from frontend import language
from frontend.account_forms import TimeZoneForm
from servers.imap.store_api import INBOX, StoreError
from servers.message_auth import sender_check
from servers.models import Mailbox
from servers.services.errors import RefusedError
from servers.services.mailboxes import LoginRefusedError, authenticate_mailbox, change_password, record_logon

from . import folders, index, mime, session
from .forms import ComposeForm, PasswordForm, SignInForm
from .models import DRAFTS, SENT, TRASH, MessageIndex
from .submission import SubmissionError, submit

PAGE_SIZE = 50
FRAME_CSP = (
    "default-src 'none'; img-src data: {images}; style-src 'unsafe-inline'; font-src 'none'; "
    "form-action 'none'; base-uri 'none'; frame-src 'none'; sandbox allow-popups "
    "allow-popups-to-escape-sandbox"
)
DOWNLOAD_CSP = "default-src 'none'; sandbox"
INLINE_SALT = "mailconsole.webmail.inline"
INLINE_MAX_AGE_S = 3600
INLINE_FINGERPRINT_CHARS = 16


# -- sign-in --------------------------------------------------------------------------------------


@sensitive_post_parameters("password")
@never_cache
def sign_in(request: HttpRequest) -> HttpResponse:
    if request.method == "GET" and session.current_mailbox(request) is not None:
        return redirect("webmail:folder", "inbox")
    form = SignInForm(request.POST or None)
    status = 200
    if request.method == "POST" and form.is_valid():
        address = form.cleaned_data["address"].strip()
        client = request.META.get("REMOTE_ADDR", "")
        attempt = session.reserve_sign_in(client, address)
        if not attempt.allowed:
            minutes = session.lockout_minutes()
            form.add_error(
                None,
                ngettext(
                    "Too many failed sign-ins. Try again in %(minutes)d minute.",
                    "Too many failed sign-ins. Try again in %(minutes)d minutes.",
                    minutes,
                )
                % {"minutes": minutes},
            )
            status = 429
        else:
            try:
                signed_in = authenticate_mailbox(address, form.cleaned_data["password"])
            except LoginRefusedError as refusal:
                if refusal.reason == "locked":
                    attempt.succeeded()  # the password was right: not a guess
                    form.add_error(None, gettext("This mailbox is locked. Ask your administrator."))
                    status = 403
                else:
                    attempt.failed()
                    form.add_error(None, gettext("The address or password is incorrect."))
                    status = 401
            else:
                attempt.succeeded()
                mailbox = Mailbox.objects.select_related("domain__server").get(pk=signed_in.mailbox_id)
                session.sign_in(request, mailbox, form.cleaned_data["password"])
                record_logon(mailbox.pk, client, "WEBMAIL")
                response = session.set_key_cookie(request, redirect("webmail:folder", "inbox"))
                return language.restore_at_sign_in(request, response, language.mailbox_owner(mailbox.pk))
    return session.with_page_policy(render(request, "webmail/sign_in.html", {"form": form}, status=status))


@require_POST
def sign_out(request: HttpRequest) -> HttpResponse:
    response = redirect("webmail:sign_in")
    session.sign_out(request, response)
    return response


# -- every page: the folder tree, the quota, an undo offered right after a delete --------------------


UNDO_SESSION_KEY = "webmail_undo"


def _quota(mailbox) -> dict:
    # The quota counts every folder, as the store's does (servers.mailfolders.MaildirAccount.quota).
    totals = MessageIndex.objects.filter(mailbox_id=mailbox.pk).aggregate(size=Sum("size_octets"), count=Count("id"))
    used, count = totals["size"] or 0, totals["count"] or 0
    percent = None
    if mailbox.quota_bytes:
        percent = min(100, round(100 * used / mailbox.quota_bytes))
    if mailbox.quota_messages:
        percent = max(percent or 0, min(100, round(100 * count / mailbox.quota_messages)))
    return {
        "used_bytes": used,
        "count": count,
        "limit_bytes": mailbox.quota_bytes,
        "limit_messages": mailbox.quota_messages,
        "percent": percent,
    }


def _page_context(request: HttpRequest, *, current: str | None = None, **extra) -> dict:
    """What every signed-in page shows: the folders with their counts (refreshed), the quota, an undo."""
    mailbox = request.mailbox
    tree, refreshed = folders.folder_tree(mailbox, current=current)
    return {
        "mailbox": mailbox,
        "folders": tree,
        "current_folder": current,
        "pending": refreshed.pending,
        "quota": _quota(mailbox),
        "undo": request.session.pop(UNDO_SESSION_KEY, None),
        **extra,
    }


def folder_slug(name: str) -> str:
    """A folder's part of the URL: its IMAP name ("inbox" for INBOX)."""
    return "inbox" if name == INBOX else name


@never_cache
@session.mailbox_required
def folder(request: HttpRequest, slug: str) -> HttpResponse:
    mailbox = request.mailbox
    try:
        folder_name = folders.existing_folder(mailbox, slug)
    except StoreError:
        raise Http404("No such folder.") from None
    context = _page_context(request, current=folder_name)
    query = request.GET.get("q", "")[:200]
    rows = MessageIndex.objects.for_mailbox(mailbox.pk, folder_name).matching(query).order_by("-delivered_at", "-id")
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(
        request,
        "webmail/folder.html",
        {
            **context,
            "folder": folder_name,
            "folder_title": folders.display_name(folder_name),
            "slug": folder_slug(folder_name),
            "lists_recipients": folder_name in (SENT, DRAFTS),
            "is_trash": folder_name == TRASH,
            "page": page,
            "query": query,
        },
    )


# -- one message ----------------------------------------------------------------------------------


def _own_message(request: HttpRequest, pk: int) -> MessageIndex:
    return get_object_or_404(MessageIndex, pk=pk, mailbox_id=request.mailbox.pk)


def _raw(request: HttpRequest, message: MessageIndex) -> bytes:
    return _raw_from(request.mailbox.maildir, message)


def _raw_from(maildir: Path, message: MessageIndex) -> bytes:
    path = index.locate(message, maildir)
    try:
        if path is None:
            raise FileNotFoundError
        return path.read_bytes()
    except FileNotFoundError:
        # Deleted by a POP3 client meanwhile: the index forgets it too.
        MessageIndex.objects.filter(pk=message.pk).delete()
        raise Http404("This message is no longer in the mailbox.") from None


def _slug_of(message: MessageIndex) -> str:
    return folder_slug(message.folder)


@never_cache
@session.mailbox_required
def read(request: HttpRequest, pk: int) -> HttpResponse:
    message = _own_message(request, pk)
    if message.folder == DRAFTS:  # opening a draft continues editing it
        return redirect(reverse("webmail:compose") + f"?draft={message.pk}")
    parsed = mime.parse(_raw(request, message))
    if not message.is_read:
        index.set_seen(message, request.mailbox.maildir, True)
    html_part, plain_part = mime.body_parts(parsed)
    remote_images = False
    if html_part is not None:
        _, remote_images = mime.sanitize_html(
            mime.text_of(html_part), cid_url=lambda cid: None, show_remote_images=False
        )
    show_images = request.GET.get("images") == "1"
    body_url = reverse("webmail:body", args=[message.pk]) + ("?images=1" if show_images else "")
    headers = {
        name.lower().replace("-", "_"): mime.header(parsed, name)
        for name in ("From", "To", "Cc", "Reply-To", "Subject", "Date")
    }
    return render(
        request,
        "webmail/message.html",
        _page_context(
            request,
            current=message.folder,
            message=message,
            headers=headers,
            slug=_slug_of(message),
            is_trash=message.folder == TRASH,
            has_html=html_part is not None,
            plain_text=mime.text_of(plain_part) if html_part is None else "",
            body_url=body_url,
            remote_images=remote_images and not show_images,
            attachments=[p for p in mime.parts_of(parsed) if p.is_attachment],
            sender_verdict=sender_verdict(parsed),
        ),
    )


def sender_verdict(parsed: EmailMessage) -> dict[str, str] | None:
    """What our Authentication-Results header says of the sender, in plain words (None: nothing).

    Only the header naming this host counts: the SMTP server removes incoming ones that claim to be
    ours, so another one is the sender's own word.
    """
    values = (str(value) for value in parsed.get_all("Authentication-Results") or ())
    check = sender_check(values, settings.MAIL_HOSTNAME)  # our authserv-id: the SMTP servers' host name
    if check is None:
        return None
    if check.signed_in_as:
        return {
            "level": "success",
            "text": gettext("Sent by a signed-in user: %(user)s") % {"user": check.signed_in_as},
        }
    if check.spf == "none" and check.dkim == "none" and check.dmarc == "none":
        return None
    details = {
        "domain": check.domain or gettext("unknown domain"),
        "spf": check.spf,
        "dkim": check.dkim,
        "dmarc": check.dmarc,
    }
    if check.verified:
        text = gettext("Sender verified: %(domain)s (SPF %(spf)s, DKIM %(dkim)s, DMARC %(dmarc)s)")
        return {"level": "success", "text": text % details}
    if check.verified is False:
        text = gettext(
            "Warning: the sender could not be verified as %(domain)s (SPF %(spf)s, DKIM %(dkim)s, DMARC %(dmarc)s); "
            "it may be forged."
        )
        return {"level": "warning", "text": text % details}
    text = gettext("Sender not verified: %(domain)s (SPF %(spf)s, DKIM %(dkim)s, DMARC %(dmarc)s)")
    return {"level": "secondary", "text": text % details}


def _untrusted(response: HttpResponseBase, csp: str = DOWNLOAD_CSP) -> HttpResponseBase:
    """Headers for anything taken from a message: no sniffing, no referrer, no caching, sandboxed."""
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = csp
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, no-store"
    response["Cross-Origin-Resource-Policy"] = "same-origin"
    return response


@xframe_options_sameorigin
@session.mailbox_required
def body(request: HttpRequest, pk: int) -> HttpResponse:
    """The HTML body, sanitized, for the read page's sandboxed frame."""
    message = _own_message(request, pk)
    parsed = mime.parse(_raw(request, message))
    html_part, _ = mime.body_parts(parsed)
    if html_part is None:
        raise Http404("This message has no HTML body.")
    inline = {p.content_id: p.number for p in mime.parts_of(parsed) if p.content_id}
    # A leaf body part can be an inline image too (multipart/related without Content-Disposition).
    for number, part in enumerate(parsed.walk()):
        content_id = (part.get("Content-ID") or "").strip().strip("<>")
        if content_id and not part.is_multipart():
            inline.setdefault(content_id, number)
    fingerprint = session.password_fingerprint(request.mailbox)[:INLINE_FINGERPRINT_CHARS]

    def cid_url(content_id: str) -> str | None:
        number = inline.get(content_id)
        if number is None:
            return None
        token = signing.dumps([request.mailbox.pk, message.pk, number, fingerprint], salt=INLINE_SALT)
        return reverse("webmail:inline", args=[token])

    show_images = request.GET.get("images") == "1"
    cleaned, _ = mime.sanitize_html(mime.text_of(html_part), cid_url=cid_url, show_remote_images=show_images)
    document = (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="referrer" content="no-referrer">'
        "<style>body{font-family:system-ui,sans-serif;margin:0;padding:.5rem;overflow-wrap:anywhere}"
        "img{max-width:100%;height:auto}</style></head><body>" + cleaned + "</body></html>"
    )
    # The CSP's img-src names the path of the signed inline-image URLs, nothing wider.
    images = request.build_absolute_uri(reverse("webmail:inline", args=["-"]).removesuffix("-/"))
    if show_images:
        images += " https: http:"
    response = HttpResponse(document, content_type="text/html; charset=utf-8")
    return _untrusted(response, FRAME_CSP.format(images=images))


def inline(request: HttpRequest, token: str) -> HttpResponse:
    """An inline (cid:) image of a message, only as one of a few raster image types.

    The sandboxed frame has an opaque origin, so the browser sends it no SameSite cookie: the
    URL itself is the permission, signed for one part of one message of one mailbox, for an hour,
    and void once the mailbox's password changes.
    """
    try:
        mailbox_id, pk, number, fingerprint = signing.loads(token, salt=INLINE_SALT, max_age=INLINE_MAX_AGE_S)
    except (signing.BadSignature, TypeError, ValueError):
        raise Http404("No such image.") from None
    mailbox = Mailbox.objects.select_related("domain__server").filter(pk=mailbox_id).first()
    if (
        mailbox is None
        or mailbox.is_locked
        or not constant_time_compare(fingerprint, session.password_fingerprint(mailbox)[:INLINE_FINGERPRINT_CHARS])
    ):
        raise Http404("No such image.")
    message = get_object_or_404(MessageIndex, pk=pk, mailbox_id=mailbox.pk)
    found = mime.part_payload(mime.parse(_raw_from(mailbox.maildir, message)), number)
    if found is None or found[0].get_content_type() not in mime.INLINE_IMAGE_TYPES:
        raise Http404("No such image.")
    part, payload = found
    response = HttpResponse(payload, content_type=part.get_content_type())
    response["Content-Disposition"] = "inline"
    _untrusted(response)
    del response["Cross-Origin-Resource-Policy"]  # loaded by the frame's opaque origin
    return response


@session.mailbox_required
def attachment(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """Any part of the message, always as a download (never rendered on our origin)."""
    message = _own_message(request, pk)
    parsed = mime.parse(_raw(request, message))
    found = mime.part_payload(parsed, number)
    if found is None:
        raise Http404("No such attachment.")
    part, payload = found
    name = mime.safe_file_name(part.get_filename() or "", f"part-{number}")
    response = HttpResponse(payload, content_type="application/octet-stream")
    response["Content-Disposition"] = content_disposition_header(True, name)
    return _untrusted(response)


@session.mailbox_required
def source(request: HttpRequest, pk: int) -> HttpResponse:
    message = _own_message(request, pk)
    response = HttpResponse(_raw(request, message), content_type="text/plain; charset=utf-8")
    return _untrusted(response)


# -- compose --------------------------------------------------------------------------------------


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines())


def _prefixed(subject: str, prefix: str) -> str:
    return subject if subject.lower().startswith(prefix.lower()) else f"{prefix} {subject}".strip()


def _initial_for(request: HttpRequest) -> dict:
    """Pre-filled fields for a reply, a reply to all or a forward of a message of this mailbox."""
    for mode in ("reply", "reply_all", "forward"):
        pk = request.GET.get(mode)
        if pk:
            break
    else:
        return {"save_copy": True}
    if not pk.isdigit():
        raise Http404("No such message.")
    original = _own_message(request, int(pk))
    parsed = mime.parse(_raw(request, original))
    html_part, plain_part = mime.body_parts(parsed)
    text = mime.text_of(plain_part) if plain_part is not None else ""
    if not text and html_part is not None:
        text = nh3.clean(mime.text_of(html_part), tags=set())
    sender, subject, date = mime.header(parsed, "From"), mime.header(parsed, "Subject"), mime.header(parsed, "Date")
    if mode == "forward":
        forwarded = (
            f"\n\n---------- Forwarded message ----------\nFrom: {sender}\nDate: {date}\n"
            f"Subject: {subject}\nTo: {mime.header(parsed, 'To')}\n\n{text}"
        )
        return {"subject": _prefixed(subject, "Fwd:"), "body": forwarded, "forward_of": original.pk, "save_copy": True}
    own = request.mailbox.address.lower()
    to = mime.header(parsed, "Reply-To") or sender
    cc = ""
    if mode == "reply_all":
        others = [
            formataddr((name, address))
            for name, address in getaddresses([mime.header(parsed, "To"), mime.header(parsed, "Cc")])
            if address and address.lower() != own and address.lower() not in {a.lower() for _, a in getaddresses([to])}
        ]
        cc = ", ".join(others)
    return {
        "to": to,
        "cc": cc,
        "subject": _prefixed(subject, "Re:"),
        "in_reply_to": original.pk,
        "body": f"\n\nOn {date}, {sender} wrote:\n{_quote(text)}\n",
        "save_copy": True,
    }


def _build_message(request: HttpRequest, form: ComposeForm) -> EmailMessage:
    mailbox = request.mailbox
    data = form.cleaned_data
    message = EmailMessage()
    message["From"] = formataddr((mailbox.display_name, mailbox.address))
    if data["to"]:
        message["To"] = data["to"]
    if data["cc"]:
        message["Cc"] = data["cc"]
    message["Subject"] = data["subject"]
    message["Date"] = timezone.now().astimezone(dt.UTC)
    message["Message-ID"] = make_msgid(domain=mailbox.domain.name)
    message["User-Agent"] = "MailConsole webmail"
    message.set_content(data["body"] or "")
    if data.get("in_reply_to"):
        original = _own_message(request, data["in_reply_to"])
        parsed = mime.parse(_raw(request, original))
        original_id = mime.header(parsed, "Message-ID")
        if original_id:
            message["In-Reply-To"] = original_id
            message["References"] = f"{mime.header(parsed, 'References')} {original_id}".strip()
    if data.get("bcc") and getattr(form, "for_draft", False):
        message["Bcc"] = data["bcc"]  # kept in the draft only, for whoever continues it
    # A forwarded message's attachments, and a continued draft's, go with it.
    for carried in (data.get("forward_of"), data.get("draft")):
        if not carried:
            continue
        original = _own_message(request, carried)
        parsed = mime.parse(_raw(request, original))
        if carried == data.get("draft") and not message["In-Reply-To"]:
            # A continued reply keeps its threading headers, which the draft holds.
            for name in ("In-Reply-To", "References"):
                if mime.header(parsed, name):
                    message[name] = mime.header(parsed, name)
        for part in mime.parts_of(parsed):
            if part.is_attachment:
                found = mime.part_payload(parsed, part.number)
                if found is not None:
                    maintype, _, subtype = part.content_type.partition("/")
                    message.add_attachment(
                        found[1], maintype=maintype, subtype=subtype or "octet-stream", filename=part.file_name
                    )
    for upload in data["attachments"]:
        maintype, _, subtype = (upload.content_type or "application/octet-stream").partition("/")
        message.add_attachment(
            upload.read(),
            maintype=maintype or "application",
            subtype=subtype or "octet-stream",
            filename=mime.safe_file_name(upload.name, "attachment"),
        )
    return message


def _own_draft(request: HttpRequest, pk: int | None) -> MessageIndex | None:
    if not pk:
        return None
    return get_object_or_404(MessageIndex, pk=pk, mailbox_id=request.mailbox.pk, folder=DRAFTS)


def _draft_initial(request: HttpRequest, pk: str) -> dict:
    """The fields of a saved draft, to continue editing it."""
    if not pk.isdigit() or len(pk) > 18:
        raise Http404("No such draft.")
    draft = _own_draft(request, int(pk))
    assert draft is not None
    parsed = mime.parse(_raw(request, draft))
    _, plain_part = mime.body_parts(parsed)
    return {
        "to": mime.header(parsed, "To"),
        "cc": mime.header(parsed, "Cc"),
        "bcc": mime.header(parsed, "Bcc"),
        "subject": mime.header(parsed, "Subject"),
        "body": mime.text_of(plain_part) if plain_part is not None else "",
        "draft": draft.pk,
        "save_copy": True,
    }


def _save_draft(request: HttpRequest, form: ComposeForm) -> HttpResponse | None:
    """Keep the message in Drafts (replacing the draft it continues); the compose page again, or None on a refusal."""
    draft = _own_draft(request, form.cleaned_data.get("draft"))
    message = _build_message(request, form)
    try:
        saved = folders.save_draft(request.mailbox, message.as_bytes(), replacing=draft)
    except StoreError as error:
        form.add_error(None, gettext("The draft was not saved: %(reason)s.") % {"reason": error.text})
        return None
    messages.success(request, gettext("The draft was saved in Drafts."))
    if saved is None:
        return redirect("webmail:folder", DRAFTS)
    return redirect(reverse("webmail:compose") + f"?draft={saved.pk}")


def _send(request: HttpRequest, form: ComposeForm) -> HttpResponse | None:
    """Hand the message to the server, keep the Sent copy, drop the draft it came from; None on a refusal."""
    draft = _own_draft(request, form.cleaned_data.get("draft"))
    message = _build_message(request, form)
    password = session.submission_password(request)
    try:
        if not password:
            raise SubmissionError(
                gettext("Your sign-in for sending has expired: sign out, sign in again, then send the message.")
            )
        result = submit(request.mailbox, password, message, form.recipients())
    except SubmissionError as error:
        form.add_error(None, str(error))
        return None
    if form.cleaned_data["save_copy"]:
        index.store_sent(request.mailbox.pk, request.mailbox.maildir, message.as_bytes())
    if draft is not None:
        folders.discard_draft(request.mailbox, draft)
    if result.refused:
        messages.warning(
            request,
            gettext("Sent, but these recipients were refused: %(refused)s")
            % {"refused": "; ".join(f"{rcpt} ({reason})" for rcpt, reason in result.refused.items())},
        )
    else:
        messages.success(request, gettext("The message was sent."))
    return redirect("webmail:folder", "inbox")


@sensitive_post_parameters()
@never_cache
@session.mailbox_required
def compose(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        saving_draft = "save_draft" in request.POST
        form = ComposeForm(request.POST, request.FILES, for_draft=saving_draft)
        if form.is_valid():
            done = _save_draft(request, form) if saving_draft else _send(request, form)
            if done is not None:
                return done
    elif request.GET.get("draft"):
        form = ComposeForm(initial=_draft_initial(request, request.GET["draft"]))
    else:
        form = ComposeForm(initial=_initial_for(request))
    carried = []
    for field in ("forward_of", "draft"):
        original_pk = form[field].value()
        if original_pk and str(original_pk).isdigit():
            original = _own_message(request, int(original_pk))
            carried += [p for p in mime.parts_of(mime.parse(_raw(request, original))) if p.is_attachment]
    return render(request, "webmail/compose.html", _page_context(request, form=form, forwarded=carried))


# -- settings -------------------------------------------------------------------------------------


@sensitive_post_parameters()
@never_cache
@session.mailbox_required
def password(request: HttpRequest) -> HttpResponse:
    form = PasswordForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        mailbox = request.mailbox
        client = request.META.get("REMOTE_ADDR", "")
        # A session left open must not become a way to guess the password: the sign-in throttle counts here too.
        attempt = session.reserve_sign_in(client, mailbox.address)
        if not attempt.allowed:
            minutes = session.lockout_minutes()
            form.add_error(
                None,
                ngettext(
                    "Too many wrong passwords. Try again in %(minutes)d minute.",
                    "Too many wrong passwords. Try again in %(minutes)d minutes.",
                    minutes,
                )
                % {"minutes": minutes},
            )
            return render(request, "webmail/password.html", _page_context(request, form=form), status=429)
        try:
            authenticate_mailbox(mailbox.address, form.cleaned_data["current_password"])
        except LoginRefusedError:
            attempt.failed()
            form.add_error("current_password", gettext("This is not your current password."))
        else:
            attempt.succeeded()
            try:
                updated = change_password(
                    mailbox, form.cleaned_data["new_password"], actor=f"webmail:{mailbox.address}"
                )
            except RefusedError as error:
                form.add_error("new_password", error.message)
            else:
                session.password_changed(request, updated, form.cleaned_data["new_password"])
                messages.success(request, gettext("Your password was changed."))
                response = session.set_key_cookie(request, redirect("webmail:folder", "inbox"))
                return language.restore_at_sign_in(request, response, language.mailbox_owner(mailbox.pk))
    return render(request, "webmail/password.html", _page_context(request, form=form, zone_form=_zone_form(request)))


def _zone_form(request: HttpRequest, data=None) -> TimeZoneForm:
    owner = language.mailbox_owner(request.mailbox.pk)
    return TimeZoneForm(data, initial={"time_zone": language.saved_time_zone(owner)})


@never_cache
@require_POST
@session.mailbox_required
def time_zone(request: HttpRequest) -> HttpResponse:
    """The zone the webmail shows dates in, remembered for the mailbox."""
    form = _zone_form(request, request.POST)
    if not form.is_valid():
        return render(
            request, "webmail/password.html", _page_context(request, form=PasswordForm(), zone_form=form), status=400
        )
    language.save_time_zone(request, language.mailbox_owner(request.mailbox.pk), form.cleaned_data["time_zone"])
    messages.success(
        request,
        gettext("Dates are now shown in: %(zone)s.")
        % {"zone": form.cleaned_data["time_zone"] or gettext("the server's time zone")},
    )
    return redirect("webmail:password")
