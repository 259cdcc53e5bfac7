"""Outbound delivery: the Queue folder, routing, the SMTP client, retries, DSNs, Pickup and queue actions.

The files under each server's home directory are the truth; the rows in `servers.delivery.models`
index them and hold per-recipient progress, and can be rebuilt from the Queue folder.
"""
