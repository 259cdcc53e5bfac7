"""Reading a stored message: decoded headers, the body to show, its parts, and sanitized HTML.

Parts are numbered by their position in `Message.walk()`, which depends only on the message's
bytes, so a part number in a URL always names the same part of the same stored file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from typing import cast

import nh3

# Shown inline only as these image types (SVG can carry script, so it is only ever downloaded).
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
ALLOWED_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "caption",
        "center",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "del",
        "div",
        "dl",
        "dt",
        "em",
        "font",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "ins",
        "kbd",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "s",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "tt",
        "u",
        "ul",
    }
)
_COMMON_ATTRIBUTES = {"align", "dir", "lang", "style", "title", "width", "height", "valign", "bgcolor"}
ALLOWED_ATTRIBUTES = {
    "*": _COMMON_ATTRIBUTES,
    "a": {"href"},
    "img": {"src", "alt", "border"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "ol": {"start", "type"},
}
# Layout and colour only: nothing that loads a URL (background-image, list-style-image...) or escapes
# the frame's box (position).
ALLOWED_STYLE_PROPERTIES = frozenset(
    {
        "background-color",
        "border",
        "border-bottom",
        "border-collapse",
        "border-color",
        "border-left",
        "border-radius",
        "border-right",
        "border-spacing",
        "border-style",
        "border-top",
        "border-width",
        "color",
        "display",
        "font",
        "font-family",
        "font-size",
        "font-style",
        "font-weight",
        "height",
        "letter-spacing",
        "line-height",
        "margin",
        "margin-bottom",
        "margin-left",
        "margin-right",
        "margin-top",
        "max-width",
        "min-width",
        "padding",
        "padding-bottom",
        "padding-left",
        "padding-right",
        "padding-top",
        "text-align",
        "text-decoration",
        "text-indent",
        "text-transform",
        "vertical-align",
        "white-space",
        "width",
        "word-break",
        "word-wrap",
    }
)
URL_SCHEMES = frozenset({"http", "https", "mailto", "cid", "data"})
SAFE_FILE_NAME_RE = re.compile(r"[^\w.\- ()\[\]+,@=]")


@dataclass(frozen=True)
class Part:
    number: int
    content_type: str
    file_name: str
    size_octets: int
    content_id: str
    is_attachment: bool


def parse(raw: bytes) -> EmailMessage:
    # policy.default makes the parser build EmailMessage objects; typeshed's overloads cannot tell.
    return cast(EmailMessage, BytesParser(policy=policy.default).parsebytes(raw))


def _decoded_payload(part: Message) -> bytes:
    """The part's body with its transfer encoding undone; b'' for a multipart or an empty part."""
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def header(message: EmailMessage, name: str) -> str:
    """A header decoded (RFC 2047), or its raw text if it does not parse; '' when absent."""
    try:
        value = message[name]
    except Exception:  # noqa: BLE001 - a malformed header must not stop the message from showing
        value = message.get_all(name, failobj=[""])[0]
    return " ".join(str(value or "").split())


def _part_number_map(message: EmailMessage) -> dict[int, EmailMessage]:
    return dict(enumerate(message.walk()))


def body_parts(message: EmailMessage) -> tuple[MIMEPart | None, MIMEPart | None]:
    """The HTML and the plain-text body parts, each None when the message has none."""
    try:
        html = message.get_body(preferencelist=("html",))
        plain = message.get_body(preferencelist=("plain",))
    except Exception:  # noqa: BLE001 - broken MIME structure: show no body rather than fail
        return None, None
    return html, plain


def text_of(part: MIMEPart | None) -> str:
    if part is None:
        return ""
    try:
        return part.get_content()
    except Exception:  # noqa: BLE001 - an unknown charset or a broken encoding: decode what we can
        return _decoded_payload(part).decode("utf-8", "replace")


def safe_file_name(name: str, fallback: str) -> str:
    """A file name safe for Content-Disposition and any file system: no path, no control characters."""
    name = unicodedata.normalize("NFC", name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C")
    name = SAFE_FILE_NAME_RE.sub("_", name).strip(" .")
    return name[:150] or fallback


def parts_of(message: EmailMessage) -> list[Part]:
    """Every leaf part but the bodies shown, attachments first-class, inline images marked by Content-ID."""
    html, plain = body_parts(message)
    shown = {id(p) for p in (html, plain) if p is not None}
    parts = []
    for number, part in _part_number_map(message).items():
        if part.is_multipart() or id(part) in shown:
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:  # noqa: BLE001
            payload = b""
        content_id = (part.get("Content-ID") or "").strip().strip("<>")
        disposition = part.get_content_disposition()
        file_name = part.get_filename() or ""
        is_attachment = disposition == "attachment" or bool(file_name) or not content_id
        parts.append(
            Part(
                number=number,
                content_type=part.get_content_type(),
                file_name=safe_file_name(file_name, f"part-{number}"),
                size_octets=len(payload),
                content_id=content_id,
                is_attachment=is_attachment,
            )
        )
    return parts


def part_payload(message: EmailMessage, number: int) -> tuple[EmailMessage, bytes] | None:
    part = _part_number_map(message).get(number)
    if part is None or part.is_multipart():
        return None
    return part, _decoded_payload(part)


def sanitize_html(html: str, *, cid_url: Callable[[str], str | None], show_remote_images: bool) -> tuple[str, bool]:
    """Allow-listed HTML with cid: images pointed at our URLs; also say whether remote images were held back."""
    blocked: list[str] = []

    def attribute_filter(tag: str, attribute: str, value: str) -> str | None:
        if tag == "img" and attribute == "src":
            if value.lower().startswith("cid:"):
                return cid_url(value[4:].strip().strip("<>"))
            if value.lower().startswith("data:"):
                return value if re.match(r"(?i)data:image/(png|jpeg|gif|webp|bmp)[;,]", value) else None
            if value.lower().startswith(("http:", "https:")):
                if show_remote_images:
                    return value
                blocked.append(value)
            return None
        if attribute == "href" and value.lower().startswith(("cid:", "data:")):
            return None
        return value

    cleaned = nh3.clean(
        html,
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        url_schemes=set(URL_SCHEMES),
        clean_content_tags={
            "script",
            "style",
            "title",
            "head",
            "template",
            "noscript",
            "textarea",
            "select",
            "iframe",
            "object",
            "embed",
            "svg",
            "math",
            "xmp",
            "noembed",
            "noframes",
        },
        filter_style_properties=set(ALLOWED_STYLE_PROPERTIES),
        attribute_filter=attribute_filter,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
    return cleaned, bool(blocked)
