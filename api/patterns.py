"""Patterns the API checks input against, the same ones its OpenAPI schema publishes.

Each field below is checked twice: here, against exactly the pattern the schema shows (drf-spectacular
publishes a RegexValidator as `pattern`), and then by the services, which canonicalise and enforce the rest.
Every pattern is a subset of what the services accept, so a request valid by the schema is never refused
for that field's shape, and one the schema calls invalid is refused here (issue 13, finding 12).
"""

from __future__ import annotations

from django.core.validators import RegexValidator

# Text never holds NUL (PostgreSQL cannot store it; DRF's CharField refuses it too).
_TEXT = "[^\\u0000]"

# A host name label (RFC 1123); "--" in the 3rd and 4th places is reserved for IDNA (RFC 5891 4.2.3.1).
_LABEL = "(?![A-Za-z0-9]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = f"(?=.{{1,253}}\\.?$){_LABEL}(?:\\.{_LABEL})*\\.?"
# A domain may also be typed in Unicode (почта.рф, bücher.example): a label with a non-ASCII character.
# The service turns it into its A-label form with IDNA (UTS #46), which refuses what no pattern can
# describe (mixed scripts, disallowed code points) with "... is not a valid domain name".
_U_CHAR = "A-Za-z0-9\\u0080-\\uffff"
_U_LABEL = f"(?=[^.]*[\\u0080-\\uffff])[{_U_CHAR}](?:[{_U_CHAR}-]{{0,61}}[{_U_CHAR}])?"
# ... or in the A-label form the API itself answers with (xn--80a1acny.xn--p1ai).
_A_LABEL = "[Xx][Nn]--[A-Za-z0-9](?:[A-Za-z0-9-]{0,57}[A-Za-z0-9])?"
_DOMAIN_LABEL = f"(?:{_LABEL}|{_A_LABEL}|{_U_LABEL})"
DOMAIN_NAME = f"^(?=.{{1,253}}\\.?$){_DOMAIN_LABEL}(?:\\.{_DOMAIN_LABEL})*\\.?$"

_IPV4_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = f"{_IPV4_OCTET}(?:\\.{_IPV4_OCTET}){{3}}"
_H16 = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    f"(?:(?:{_H16}:){{7}}{_H16}"
    f"|(?:{_H16}:){{1,7}}:"
    f"|(?:{_H16}:){{1,6}}:{_H16}"
    f"|(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}"
    f"|(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}"
    f"|(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}"
    f"|(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}"
    f"|{_H16}:(?::{_H16}){{1,6}}"
    f"|:(?:(?::{_H16}){{1,7}}|:))"
)
# A smart host: a host name, an IP address, or one in brackets (IIS's "[10.0.0.5]"). The fields that take
# these allow "" besides (for none), which the schema shows as its own alternative.
SMART_HOST = f"^(?:{_HOST_NAME}|\\[{_IPV4}\\]|{_IPV6}|\\[{_IPV6}\\])$"

# A mailbox or group name: RFC 5321 dot-atom characters, minus "/" (a name becomes a Maildir path).
_ATOM = "[A-Za-z0-9!#$%&'*+=?^_`{|}~-]+"
LOCAL_PART = f"^{_ATOM}(?:\\.{_ATOM})*$"
# Django formats a validator's message with %: no bare percent sign here.
LOCAL_PART_HELP = "Enter a mailbox name: letters, digits and . _ + - (no dot at either end or twice in a row)."

# The password rule (servers.services.mailboxes.password_policy_errors): 8+ characters with an upper-case
# letter, a lower-case letter and a digit, in any script ("Пароль2024" is a good password). An ECMA-262
# pattern cannot say "an upper-case letter" beyond ASCII, so the schema checks the length (and NUL) and the
# description states the rest; the service refuses with "The password must contain ...".
PASSWORD = f"^{_TEXT}{{8,}}$"
PASSWORD_HELP = "8+ characters with an upper-case letter, a lower-case letter and a digit (any script)."

# A name shown in lists: anything but NUL, with at least one visible character.
NAME = f"^(?={_TEXT}*\\S){_TEXT}*$"

# An IP address to listen on; empty (or 0.0.0.0) for all unassigned addresses.
IP_ADDRESS = f"^(?:{_IPV4}|{_IPV6})$"

# The DNS server delivery asks: an IP address, optionally with a port ("127.0.0.1:5353", "[::1]:5353").
_PORT = "(?::[0-9]{1,5})?"
DNS_SERVER = f"^(?:{_IPV4}{_PORT}|{_IPV6}|\\[(?:{_IPV4}|{_IPV6})\\]{_PORT})$"

# A copy of every non-delivery report goes here: a mail address, or nothing.
NDR_COPY_ADDRESS = "^[^\\u0000\\s@]+@[^\\u0000\\s@]+$"

# The Filters tab. Lists: entries separated by commas or white space (the services split on either).
_SEPARATOR = "[ \\t\\r\\n,]"
FILE_EXTENSIONS = f"^{_SEPARATOR}*(?:\\.?[A-Za-z0-9_+~-]{{1,20}}(?:{_SEPARATOR}+|$))*$"
_MIME_NAME = "[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MIME_TYPES = f"^{_SEPARATOR}*(?:{_MIME_NAME}/(?:{_MIME_NAME}|\\*)(?:{_SEPARATOR}+|$))*$"
_TCP_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_SOCKET_HOST = "(?:[^\\u0000\\s/\\[\\]:]+|\\[[0-9A-Fa-f:.]+\\])"
# clamd: tcp://host:port or unix:/absolute/path; empty: no virus scanning.
VIRUS_SCANNER = f"^(?:tcp://{_SOCKET_HOST}:{_TCP_PORT}/?|unix:/{_TEXT}*)?$"
# rspamd: an http:// URL; empty: the RSPAMD_URL setting.
RSPAMD_URL = f"^(?:http://{_SOCKET_HOST}(?::{_TCP_PORT})?(?:/[^\\u0000\\s]*)?)?$"
# ASCII here; the console takes any printable text (sent as an encoded word).
SUBJECT_PREFIX = "^[ -~]{0,40}$"
# A sender allow or deny list: addresses ("user@example.org") and domains ("example.org" or
# "@example.org"), separated by line breaks, spaces, commas or semicolons; empty for none.
_SENDER_DOMAIN = f"{_DOMAIN_LABEL}(?:\\.{_DOMAIN_LABEL})+\\.?"
_SENDER_ENTRY = f"(?:(?:{_ATOM}(?:\\.{_ATOM})*)?@)?{_SENDER_DOMAIN}"
_SENDER_SEPARATOR = "[ \\t\\r\\n,;]"
SENDER_LIST = f"^{_SENDER_SEPARATOR}*(?:{_SENDER_ENTRY}(?:{_SENDER_SEPARATOR}+{_SENDER_ENTRY})*{_SENDER_SEPARATOR}*)?$"
SENDER_LIST_HELP = "Addresses or domains (example.org or @example.org), one a line."


def pattern_validator(pattern: str, message: str) -> RegexValidator:
    return RegexValidator(pattern, message)
