"""SMTP replies we send, as named constants that the code and the tests share.

Enhanced status codes follow RFC 3463; the basic codes RFC 5321 section 4.2.
"""

OK_QUEUED = "250 2.0.0 OK: message {message_id} accepted"
OK_RECIPIENT = "250 2.1.5 OK"
# RFC 5321 4.2.3: 421 when the service is closing the channel.
SERVICE_NOT_AVAILABLE = "421 {hostname} Service not available, try again later"
SHUTTING_DOWN = "421 4.3.2 {hostname} Service shutting down, closing transmission channel"
LOCAL_ERROR = "451 4.3.0 Requested action aborted: local error in processing"
BAD_ADDRESS = "501 5.1.3 Bad recipient address syntax"
RELAY_DENIED = "550 5.7.1 Unable to relay for {address}"
UNKNOWN_USER = "550 5.1.1 <{address}>: Recipient address rejected: User unknown"
MAILBOX_FULL = "552 5.2.2 <{address}>: Mailbox full"
# RFC 5321 gives one reply to DATA for all recipients: if the message does not fit one mailbox,
# the whole message is refused, so no recipient gets it while another silently does not.
MESSAGE_EXCEEDS_QUOTA = "552 5.2.2 Message would exceed the quota of <{address}>; nothing was delivered"
