"""The domain layer: every face (admin, API, CLI, Celery tasks, workers) changes data through these."""

from .api_support import set_domain_administrators, set_server_operators
from .client_rules import add_access_rule, add_relay_rule, remove_access_rule, remove_relay_rule
from .dkim import generate_dkim_key, remove_retired_dkim_keys, rotate_dkim_key
from .domains import add_domain, change_domain_type, remove_domain, set_default_domain, set_mailbox_quota_ceiling
from .errors import RefusedError
from .imap import create_imap_service, set_imap_state, update_imap_service
from .mailboxes import (
    LoginRefusedError,
    add_group,
    add_mailbox,
    authenticate_mailbox,
    change_password,
    delete_mailbox,
    find_local_domain,
    find_mailbox,
    mailbox_usage,
    password_policy_errors,
    record_logon,
    remove_group,
    set_catch_all,
    set_domain_lock,
    set_group_members,
    set_mailbox_lock,
    update_mailbox,
)
from .names import canonical_domain_name
from .nodes import local_node, request_reconcile, set_node_service_state
from .pop3 import create_pop3_service, set_pop3_state, update_pop3_service
from .sessions import list_sessions, terminate_session
from .virtual_servers import (
    create_submission_server,
    create_virtual_server,
    delete_virtual_server,
    pause_server,
    set_server_certificate,
    set_server_state,
    start_server,
    stop_server,
    update_virtual_server,
)

__all__ = [
    "RefusedError",
    "add_access_rule",
    "add_relay_rule",
    "list_sessions",
    "remove_access_rule",
    "remove_relay_rule",
    "terminate_session",
    "LoginRefusedError",
    "add_group",
    "add_mailbox",
    "authenticate_mailbox",
    "change_password",
    "create_imap_service",
    "set_imap_state",
    "update_imap_service",
    "create_pop3_service",
    "set_pop3_state",
    "update_pop3_service",
    "delete_mailbox",
    "find_local_domain",
    "find_mailbox",
    "mailbox_usage",
    "password_policy_errors",
    "record_logon",
    "remove_group",
    "set_catch_all",
    "set_domain_lock",
    "set_group_members",
    "set_mailbox_lock",
    "update_mailbox",
    "add_domain",
    "generate_dkim_key",
    "remove_retired_dkim_keys",
    "rotate_dkim_key",
    "canonical_domain_name",
    "change_domain_type",
    "create_submission_server",
    "create_virtual_server",
    "delete_virtual_server",
    "local_node",
    "pause_server",
    "remove_domain",
    "request_reconcile",
    "set_default_domain",
    "set_mailbox_quota_ceiling",
    "set_node_service_state",
    "set_domain_administrators",
    "set_server_certificate",
    "set_server_operators",
    "set_server_state",
    "start_server",
    "stop_server",
    "update_virtual_server",
]
