"""Errors, one shape per world: HTML pages for the site, ``{"error": "one clear sentence"}`` JSON
with the right status under /api/ (Django's handlers and DRF's exception handler both).

Shared by every domain's views and api; imports only Django and DRF.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": _("Not found.")}, status=404)
    return render(request, "404.html", status=404)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": _("Bad request.")}, status=400)
    return render(request, "400.html", status=400)


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return JsonResponse({"error": _("Internal server error.")}, status=500)
    return render(request, "500.html", status=500)


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


def get_or_404(queryset, pk: int):
    """The row, or a JSON 404 ``{"error": ...}`` naming what was not found."""
    found = queryset.filter(pk=pk).first()
    if found is None:
        raise exceptions.NotFound(f"No {queryset.model._meta.verbose_name} #{pk}.")
    return found
