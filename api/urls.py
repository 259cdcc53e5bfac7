"""The REST API under /api/v1/, its OpenAPI schema and its offline interactive docs."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("nodes", views.NodeViewSet, basename="node")
router.register("servers", views.VirtualServerViewSet, basename="server")
router.register("domains", views.DomainViewSet, basename="domain")
router.register("mailboxes", views.MailboxViewSet, basename="mailbox")
router.register("groups", views.GroupAddressViewSet, basename="group")
router.register("logons", views.LogonViewSet, basename="logon")
router.register("audit", views.AuditEntryViewSet, basename="audit")

app_name = "api"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("stats/", views.StatsView.as_view(), name="stats"),
    *router.urls,
]
