"""How failures the views do not catch become answers: the API's exception handler."""

from __future__ import annotations

from django.db import IntegrityError
from django.db.models import ProtectedError

from api.errors import exception_handler
from servers.services import DomainError


def test_a_domain_error_becomes_400_with_the_message_under_its_field():
    response = exception_handler(DomainError("The TCP port must be between 1 and 65535.", field="port"), {})
    assert response.status_code == 400
    assert response.data == {"port": ["The TCP port must be between 1 and 65535."]}


def test_a_domain_error_without_a_field_goes_under_non_field_errors():
    response = exception_handler(DomainError("No."), {})
    assert (response.status_code, response.data) == (400, {"non_field_errors": ["No."]})


def test_a_delete_blocked_by_protected_rows_becomes_409():
    response = exception_handler(ProtectedError("in use", set()), {})
    assert response.status_code == 409 and "detail" in response.data


def test_a_lost_race_on_a_unique_constraint_becomes_409():
    response = exception_handler(IntegrityError("UNIQUE constraint failed"), {})
    assert response.status_code == 409


def test_anything_else_is_left_to_drf_and_django():
    assert exception_handler(ValueError("bug"), {}) is None
