"""SMTP replies we send, as named constants that the code and the tests share.

Enhanced status codes follow RFC 3463; the basic codes RFC 5321 section 4.2.
"""

import re

OK_QUEUED = "250 2.0.0 OK: message {message_id} accepted"
OK_RECIPIENT = "250 2.1.5 OK"
# RFC 5321 4.2.3: 421 when the service is closing the channel.
SERVICE_NOT_AVAILABLE = "421 {hostname} Service not available, try again later"
SHUTTING_DOWN = "421 4.3.2 {hostname} Service shutting down, closing transmission channel"
# No session process could take an accepted connection (it died, or none took it in time).
NO_SESSION_PROCESS = "421 4.3.2 {hostname} Service temporarily unavailable, try again later"
LOCAL_ERROR = "451 4.3.0 Requested action aborted: local error in processing"
BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"
RELAY_DENIED = "554 5.7.1 <{address}>: Relay access denied"
UNKNOWN_USER = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
MAILBOX_FULL = "552 5.2.2 <{address}>: Mailbox full"
# RFC 5321 gives one reply to DATA for all recipients: if the message does not fit one mailbox,
# the whole message is refused, so no recipient gets it while another silently does not.
MESSAGE_EXCEEDS_QUOTA = "552 5.2.2 Message would exceed the quota of <{address}>; nothing was delivered"

# Connection-level refusals (General and Access tabs).
TOO_MANY_CONNECTIONS = "421 4.7.0 {hostname} Too many connections, try again later"
TOO_MANY_FROM_CLIENT = "421 4.7.0 {hostname} Too many connections from your address, try again later"
CONNECTION_REFUSED = "554 5.7.1 {hostname} Connection refused: access denied for your address"
NO_REVERSE_DNS = "554 5.7.1 {hostname} Connection refused: your address has no matching reverse DNS name"
IDLE_TIMEOUT = "421 4.4.2 {hostname} Idle timeout, closing connection"
SESSION_TOO_LONG = "421 4.4.2 {hostname} Session time limit reached, closing connection"
TOO_SLOW = "421 4.4.2 {hostname} Data rate too low, closing connection"
TERMINATED = "421 4.3.2 {hostname} Session terminated by the administrator"

# Messages tab.
MESSAGE_TOO_BIG = "552 5.3.4 Message size exceeds fixed maximum message size"
SESSION_TOO_BIG = "552 5.3.4 Session size limit exceeded"
TOO_MANY_MESSAGES = "421 4.7.0 {hostname} Too many messages in this session, closing connection"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
TOO_MANY_HOPS = "554 5.4.6 Too many hops: mail loop detected"

# Access tab: authentication, TLS and senders.
AUTH_REQUIRED = "530 5.7.0 Authentication required"
TLS_REQUIRED = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_SUCCEEDED = "235 2.7.0 Authentication successful"
AUTH_FAILED = "535 5.7.8 Authentication credentials invalid"
AUTH_LOCKED = "535 5.7.8 Mailbox locked"
TOO_MANY_AUTH_FAILURES = "421 4.7.0 {hostname} Too many authentication failures, closing connection"
SENDER_NOT_OWNED = "553 5.7.1 <{address}>: Sender address rejected: not owned by user {user}"
LOCAL_SENDER_MUST_AUTHENTICATE = "530 5.7.0 <{address}>: Sender in a local domain must authenticate"
RATE_LIMITED = "450 4.7.1 Message rate limit exceeded, try again later"
HARVEST_LIMIT = "421 4.7.0 {hostname} Too many unknown recipients, closing connection"

# Anti-spam tab.
DNSBL_LISTED = "554 5.7.1 Service unavailable; client [{address}] listed by {zone}"
GREYLISTED = "451 4.7.1 <{address}>: Recipient address rejected: greylisted, try again later"
# Sender checks (RFC 3463 5.1.8: bad sender's system address).
SENDER_DOMAIN_UNKNOWN = "550 5.1.8 <{address}>: Sender address rejected: domain {domain} has no MX or address record"
PTR_NOT_IN_SENDER_DOMAIN = (
    "550 5.7.1 <{address}>: Sender address rejected: your host name ({name}) is not in the sender's domain {domain}"
)
SENDER_DENIED = "550 5.7.1 <{address}>: Sender address rejected: denied by this server's sender list"
SENDER_DENIED_FOR_DOMAIN = "550 5.7.1 <{recipient}>: Sender <{address}> is denied by the recipient domain's sender list"
# Outbound abuse limits of a signed-in mailbox.
SENDING_BLOCKED = "550 5.7.1 <{user}>: sending blocked: {reason}; ask your administrator to release the mailbox"

# Anti-spam tab: sender authentication (RFC 7372 2.2 names 5.7.23 for an SPF failure).
SPF_FAILED = "550 5.7.23 <{address}>: SPF validation failed: {domain} does not permit [{client}] to send its mail"
DMARC_REJECTED = "550 5.7.1 Message rejected: the DMARC policy of {domain} (p=reject) refuses unauthenticated mail"
# Filters tab (end of DATA).
ATTACHMENT_REFUSED = '554 5.7.1 Message refused: attachment "{filename}" {reason}'
TOO_MANY_PARTS = "554 5.7.1 Message refused: more than {limit} MIME parts to check"
VIRUS_FOUND = "554 5.7.1 Message refused: virus found: {signature}"
VIRUS_SCANNER_UNAVAILABLE = "451 4.7.1 Virus scanner unavailable, try again later"
SPAM_REFUSED = "554 5.7.1 Message refused as spam (score {score})"

# Protocol hygiene: what may appear in a command line (RFC 5321 2.4, RFC 6531 3.3).
CONTROL_CHARACTER_IN_COMMAND = "501 5.5.2 Syntax error: control characters (NUL, ...) are not allowed in commands"
EIGHT_BIT_IN_COMMAND = "501 5.5.2 Syntax error: commands are ASCII (8-bit only in addresses with SMTPUTF8)"
INVALID_UTF8_IN_COMMAND = "501 5.5.2 Syntax error: invalid UTF-8"
NON_ASCII_ADDRESS_WITHOUT_SMTPUTF8 = "553 5.6.7 Non-ASCII addresses need the SMTPUTF8 parameter (RFC 6531)"
TOO_MANY_ERRORS = "421 4.7.0 {hostname} Too many errors, closing connection"

# aiosmtpd's stock replies, rewritten to carry RFC 3463 enhanced codes.
STOCK_REWRITES = {
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": MESSAGE_TOO_BIG,
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax (commands end with CRLF, in ASCII)",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO first",
}


# RFC 3463 codes for replies that come without one (aiosmtpd's own), by basic code; others get X.0.0.
DEFAULT_ENHANCED_CODES = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "555": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "538": "5.7.11",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
}
_HAS_ENHANCED_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}(?: |$)")


def with_enhanced_code(reply: str, hostname: str) -> str:
    """`reply` with an RFC 3463 enhanced status code in front of its text.

    We advertise ENHANCEDSTATUSCODES, and RFC 2034 then wants one on every 2xx, 4xx and 5xx reply
    except the greeting and the reply to HELO/EHLO: the lines that start with our host name, the
    EHLO keyword lines ("250-...") and EHLO's last line. 3xx replies (354, AUTH challenges) keep
    their text as it is.
    """
    code, separator, text = reply[:3], reply[3:4], reply[4:]
    if code[:1] not in ("2", "4", "5") or not code.isdigit() or separator not in (" ", "-"):
        return reply
    if separator == "-" or text.startswith(hostname) or reply == "250 HELP" or _HAS_ENHANCED_CODE.match(text):
        return reply
    enhanced = DEFAULT_ENHANCED_CODES.get(code, f"{code[0]}.0.0")
    return f"{code}{separator}{enhanced} {text}".rstrip()
