"""Every failure the API can name becomes a 4xx with a body a client can show."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler

from servers.services import RefusedError
from servers.services.errors import MissingInputError


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is still in use."
    default_code = "conflict"


class StateConflict(APIException):
    """A well-formed request the object's current state refuses (RFC 9110 409), e.g. deleting the default domain."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def _fields_sent(context) -> set[str]:
    request = context.get("request")
    data = getattr(request, "data", None) if request is not None else None
    return set(data) if isinstance(data, dict) else set()


def exception_handler(exc, context):
    """DRF's handler, taught the domain's errors.

    A RefusedError about input the client sent (its field is in the body, or the body had no single field at
    fault) is a 400 by field; one about the object's state (deleting the default domain, a server that still
    has mailboxes: no field of the request is at fault) is a 409 with the same body. The schema can describe
    input, not state: this keeps every 400 a promise that the request itself was wrong.
    """
    if isinstance(exc, RefusedError):
        sent = _fields_sent(context)
        if isinstance(exc, MissingInputError) or (sent and (exc.field is None or exc.field in sent)):
            exc = ValidationError(exc.as_dict())
        else:
            exc = StateConflict(exc.as_dict())
    elif isinstance(exc, (ProtectedError, RestrictedError)):
        exc = Conflict("Other objects still depend on this one; remove them first.")
    elif isinstance(exc, IntegrityError):
        # Two requests raced past a service's check; the database kept the invariant.
        exc = Conflict("The change conflicts with another one made at the same time; try again.")
    return drf_exception_handler(exc, context)


# Django's own error pages, for what fails outside a DRF view or before one runs (an unhandled exception, a
# body too large, a bad Host): under /api/ they answer in JSON like every other API error.
def _is_api(request) -> bool:
    return request.path_info.startswith("/api/")


def _json_error(detail: str, status_code: int) -> JsonResponse:
    return JsonResponse({"detail": detail}, status=status_code)


def bad_request(request, exception, template_name=defaults.ERROR_400_TEMPLATE_NAME):
    if _is_api(request):
        if isinstance(exception, RequestDataTooBig):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return _json_error(f"The request body is larger than {limit} bytes.", 413)
        return _json_error("Bad request.", 400)
    return defaults.bad_request(request, exception, template_name)


def permission_denied(request, exception, template_name=defaults.ERROR_403_TEMPLATE_NAME):
    if _is_api(request):
        return _json_error("You do not have permission to perform this action.", 403)
    return defaults.permission_denied(request, exception, template_name)


def page_not_found(request, exception, template_name=defaults.ERROR_404_TEMPLATE_NAME):
    if _is_api(request):
        return _json_error("Not found.", 404)
    return defaults.page_not_found(request, exception, template_name)


def server_error(request, template_name=defaults.ERROR_500_TEMPLATE_NAME):
    if _is_api(request):
        return _json_error("A server error occurred; it has been logged.", 500)
    return defaults.server_error(request, template_name)
