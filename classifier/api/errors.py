"""Every API error is JSON of one shape: ``{"error": "one clear sentence"}`` with the right status."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


def _first_message(detail: Any) -> str:
    """Flatten DRF's nested error details into one readable sentence."""
    if isinstance(detail, dict):
        parts = []
        for field, value in detail.items():
            message = _first_message(value)
            parts.append(message if field in ("non_field_errors", "detail") else f"{field}: {message}")
        return "; ".join(parts)
    if isinstance(detail, list):
        return " ".join(_first_message(item) for item in detail)
    return str(detail)


def json_error_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Django's own Http404 / PermissionDenied become DRF exceptions first, so they get our shape too.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        payload: dict[str, Any] = {"error": _first_message(exc.detail)}
        if isinstance(exc.detail, dict) and not set(exc.detail) <= {"detail"}:
            payload["fields"] = exc.detail
        response.data = payload
    return response


def error_response(message: str, code: int = status.HTTP_400_BAD_REQUEST) -> Response:
    return Response({"error": message}, status=code)
