"""IMAP4rev1/IMAP4rev2 (RFC 3501, RFC 9051), sans-I/O like `servers.pop3`.

`store_api` is the boundary between the protocol and the mail store: the session calls these
methods with plain values, and `servers.mailstore` (with the folder and UID map modules) implements
them over Maildir++. The asyncio adapter is `servers.workers.imapd`.
"""
