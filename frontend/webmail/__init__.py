"""Webmail-lite: mailbox users read, write and manage their mail at /mail/."""
