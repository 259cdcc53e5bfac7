"""The REST API under /api/v1/, its OpenAPI schema and its offline interactive docs."""

from django.http import HttpRequest, JsonResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("nodes", views.NodeViewSet, basename="node")
router.register("services/imap", views.ImapServiceViewSet, basename="imap-service")
router.register("servers", views.VirtualServerViewSet, basename="server")
router.register("domains", views.DomainViewSet, basename="domain")
router.register("mailboxes", views.MailboxViewSet, basename="mailbox")
router.register("groups", views.GroupAddressViewSet, basename="group")
router.register("access-rules", views.AccessRuleViewSet, basename="access-rule")
router.register("relay-rules", views.RelayRuleViewSet, basename="relay-rule")
router.register("queue", views.QueueViewSet, basename="queue")
router.register("logons", views.LogonViewSet, basename="logon")
router.register("audit", views.AuditEntryViewSet, basename="audit")

app_name = "api"


@csrf_exempt  # nothing to protect, and a CSRF 403 in HTML would hide the JSON 404
def not_found(request: HttpRequest, *args, **kwargs) -> JsonResponse:
    """Unknown paths under /api/v1/ answer in JSON like the rest of the API (and never redirect a POST)."""
    return JsonResponse({"detail": "Not found."}, status=404)


urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    *router.urls,
    re_path(r"^[\s\S]*$", not_found),  # [\s\S], not ".": a path with a newline is still an API 404
]
