from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from frontend import autoconfig
from frontend.views.language import set_language
from servers.admin import admin_login


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [
    path("admin/login/", admin_login),  # before the admin's own: its sign-in is throttled as the console's
    path("admin/", admin.site.urls),
    path("healthz", healthz),
    path("language/", set_language, name="set-language"),
    path("api/v1/", include("api.urls")),
    # Mail program autoconfiguration (machine endpoints; Thunderbird asks both places, Outlook either case).
    path(".well-known/autoconfig/mail/config-v1.1.xml", autoconfig.thunderbird, name="autoconfig-thunderbird"),
    path("mail/config-v1.1.xml", autoconfig.thunderbird),
    path("autodiscover/autodiscover.xml", autoconfig.outlook, name="autodiscover"),
    path("Autodiscover/Autodiscover.xml", autoconfig.outlook),
    path("mail/settings/", autoconfig.settings_page, name="webmail-client-settings"),
    path("mail/settings/profile.mobileconfig", autoconfig.apple_profile, name="webmail-apple-profile"),
    path("mail/", include("frontend.webmail.urls")),
    path("", include("frontend.urls")),
]

# Django's error pages, answering in JSON under /api/ (finding 9 of issue 13: never an HTML error from the API).
handler400 = "api.errors.bad_request"
handler403 = "api.errors.permission_denied"
handler404 = "api.errors.page_not_found"
handler500 = "api.errors.server_error"
