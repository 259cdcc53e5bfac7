"""POP3 replies we send, as named constants that the session and the tests share.

Texts follow RFC 1939; bracketed response codes are RFC 2449 (IN-USE) and RFC 3206 (AUTH, SYS/TEMP).
Each constant is one line without its CRLF; `{placeholders}` are filled with str.format.
"""

GREETING = "+OK {hostname} POP3 server ready"
BYE = "+OK {hostname} POP3 server signing off"
OK = "+OK"

# Authorization (RFC 1939 section 7, RFC 5034, RFC 2595).
# The same reply for every name, so USER never reveals whether a mailbox exists.
USER_ACCEPTED = "+OK Send your password"
LOGGED_IN = "+OK Logged in, {count} messages ({octets} octets)"
SASL_CONTINUE = "+ "
TLS_BEGIN = "+OK Begin TLS negotiation"

# Transaction (RFC 1939 section 5).
MAILDROP_STAT = "+OK {count} {octets}"
SCAN_LISTING_FOLLOWS = "+OK {count} messages ({octets} octets)"
SCAN_LISTING = "+OK {number} {octets}"
SCAN_LISTING_LINE = "{number} {octets}"
UID_LISTING_FOLLOWS = "+OK Unique-ID listing follows"
UID_LISTING = "+OK {number} {uid}"
UID_LISTING_LINE = "{number} {uid}"
MESSAGE_FOLLOWS = "+OK {octets} octets"
TOP_FOLLOWS = "+OK Top of message follows"
MESSAGE_DELETED = "+OK Message {number} deleted"
MAILDROP_RESET = "+OK Maildrop has {count} messages ({octets} octets)"
CAPABILITIES_FOLLOW = "+OK Capability list follows"

# Capabilities (RFC 2449 section 6, RFC 2595 section 4, RFC 5034 section 3, RFC 3206 section 6).
CAPABILITY_TOP = "TOP"
CAPABILITY_UIDL = "UIDL"
CAPABILITY_RESP_CODES = "RESP-CODES"
CAPABILITY_AUTH_RESP_CODE = "AUTH-RESP-CODE"
CAPABILITY_USER = "USER"
CAPABILITY_SASL_PLAIN = "SASL PLAIN"
CAPABILITY_STLS = "STLS"

# Refusals of the command itself.
UNKNOWN_COMMAND = "-ERR Unknown command"
WRONG_STATE = "-ERR Command not valid in this state"
SYNTAX_ERROR = "-ERR Syntax error in arguments"
LINE_TOO_LONG = "-ERR Line too long"
INVALID_CHARACTERS = "-ERR Invalid characters in command"
TOO_MANY_ERRORS = "-ERR Too many bad commands, closing connection"

# Refusals about messages.
INVALID_MESSAGE_NUMBER = "-ERR Invalid message number"
NO_SUCH_MESSAGE = "-ERR No such message"
MESSAGE_ALREADY_DELETED = "-ERR Message {number} already deleted"
MESSAGE_UNREADABLE = "-ERR [SYS/TEMP] Could not read message {number}"
DELETIONS_NOT_COMMITTED = "-ERR [SYS/TEMP] Some deleted messages not removed"

# Refusals of a login. One reply for an unknown user and a wrong password, so neither is revealed.
AUTH_FAILED = "-ERR [AUTH] Authentication failed"
MAILBOX_LOCKED = "-ERR [AUTH] mailbox locked"
MAILBOX_IN_USE = "-ERR [IN-USE] mailbox busy"
MAILBOX_UNAVAILABLE = "-ERR [SYS/TEMP] Mailbox temporarily unavailable"
PLAINTEXT_NEEDS_TLS = "-ERR [AUTH] Plaintext login not allowed without STLS"
USER_FIRST = "-ERR Send USER first"
AUTH_MECHANISM_UNSUPPORTED = "-ERR Unsupported authentication mechanism"
AUTH_CANCELLED = "-ERR Authentication cancelled"
AUTH_MALFORMED = "-ERR Malformed authentication response"

# STLS (RFC 2595 section 4).
TLS_ALREADY_ACTIVE = "-ERR TLS already active"
TLS_UNAVAILABLE = "-ERR TLS not available"
TLS_EXPECTED = "-ERR Command received before TLS negotiation, closing connection"

# Said by the worker process, not the session (RFC 2449 section 8.2: SYS/TEMP means "try later").
SERVICE_PAUSED = "-ERR [SYS/TEMP] {hostname} POP3 service paused, try again later"
SHUTTING_DOWN = "-ERR [SYS/TEMP] {hostname} shutting down"
IDLE_TIMEOUT = "-ERR Idle timeout, closing connection"
TERMINATED = "-ERR [SYS/TEMP] Session terminated by the administrator"
