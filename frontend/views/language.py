"""The language switch on every console and webmail page (and the sign-in pages)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.utils import translation
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from frontend import language
from frontend.webmail import session


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """Switch to the posted language, remember it in the browser and for whoever is signed in here."""
    chosen = request.POST.get("language", "")
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = "/"
    response = HttpResponseRedirect(target)
    if not language.is_supported(chosen):
        return response
    translation.activate(chosen)
    language.remember_in_browser(response, chosen)
    if request.user.is_authenticated:
        language.save_choice(language.user_owner(request.user.pk), chosen)
    mailbox = session.current_mailbox(request)
    if mailbox is not None:
        language.save_choice(language.mailbox_owner(mailbox.pk), chosen)
    return response
