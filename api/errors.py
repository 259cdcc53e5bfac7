"""Every failure the API can name becomes a 4xx with a body a client can show."""

from __future__ import annotations

from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.views import exception_handler as drf_exception_handler

from servers.services import DomainError


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is still in use."
    default_code = "conflict"


def exception_handler(exc, context):
    """DRF's handler, taught the domain's errors: DomainError is 400 by field, a blocked delete is 409."""
    if isinstance(exc, DomainError):
        exc = ValidationError(exc.as_dict())
    elif isinstance(exc, (ProtectedError, RestrictedError)):
        exc = Conflict("Other objects still depend on this one; remove them first.")
    elif isinstance(exc, IntegrityError):
        # Two requests raced past a service's check; the database kept the invariant.
        exc = Conflict("The change conflicts with another one made at the same time; try again.")
    return drf_exception_handler(exc, context)
