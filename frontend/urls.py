"""The browser console under /console/ (`/` redirects there); /mail/ is kept for webmail."""

from django.urls import include, path

from frontend.views import account, auth, bulk, console, domains, imap, mailboxes, servers

console_patterns = [
    path("", console.dashboard, name="dashboard"),
    path("login/", auth.login_view, name="login"),
    path("logout/", auth.logout_view, name="logout"),
    path("account/", account.my_account, name="account"),
    path("servers/", servers.server_list, name="servers"),
    path("servers/new/", servers.server_wizard, name="server-new"),
    path("servers/service-state/", servers.node_service_state, name="node-service-state"),
    path("servers/<int:pk>/", servers.server_properties, name="server"),
    path("servers/<int:pk>/state/", servers.server_state, name="server-state"),
    path("servers/<int:pk>/rules/", servers.server_rules, name="server-rules"),
    path("servers/<int:pk>/delete/", servers.server_delete, name="server-delete"),
    path("servers/<int:pk>/domains/", domains.server_domains, name="server-domains"),
    path("servers/<int:pk>/sessions/", servers.server_sessions, name="server-sessions"),
    path("servers/<int:pk>/queue/", servers.server_queue, name="server-queue"),
    path("domains/<int:pk>/action/", domains.domain_action, name="domain-action"),
    path("domains/<int:pk>/administrators/", domains.domain_administrators, name="domain-administrators"),
    path("domains/<int:pk>/quota-ceiling/", domains.domain_quota_ceiling, name="domain-quota-ceiling"),
    path("domains/<int:pk>/language/", domains.domain_language, name="domain-language"),
    path("domains/<int:pk>/sender-lists/", domains.domain_sender_lists, name="domain-sender-lists"),
    path("domains/<int:pk>/route/", domains.remote_domain_route, name="domain-route"),
    path("domains/<int:pk>/dkim/", domains.domain_dkim, name="domain-dkim"),
    path("domains/<int:pk>/dns/", domains.domain_dns, name="domain-dns"),
    path("pop3/", domains.pop3_domains, name="pop3"),
    path("imap/<int:pk>/", imap.imap_properties, name="imap"),
    path("imap/<int:pk>/sessions/", imap.imap_sessions, name="imap-sessions"),
    path("domains/<int:pk>/", mailboxes.domain_mailboxes, name="domain"),
    path("domains/<int:pk>/mailboxes/new/", mailboxes.mailbox_new, name="mailbox-new"),
    path("domains/<int:pk>/groups/new/", mailboxes.group_new, name="group-new"),
    path("domains/<int:pk>/import/", bulk.mailbox_import, name="domain-import"),
    path("domains/<int:pk>/export.csv", bulk.mailbox_export, name="domain-export"),
    path("mailboxes/<int:pk>/", mailboxes.mailbox_detail, name="mailbox"),
    path("groups/<int:pk>/", mailboxes.group_detail, name="group"),
    path("logons/", console.logons, name="logons"),
    path("audit/", console.audit_log, name="audit"),
    path("services/", console.node_services, name="services"),
    path("services/<str:service>/state/", console.service_state, name="service-state"),
]

urlpatterns = [
    path("", console.root, name="root"),
    path("console/", include((console_patterns, "console"))),
]
