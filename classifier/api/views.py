"""JSON API. Every error is ``{"error": ...}`` (see classifier.api.errors)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from classifier.health import health_report

_check = inline_serializer(
    "HealthCheck", fields={"status": serializers.CharField(), "detail": serializers.CharField()}
)


@extend_schema(
    summary="State of the database, the broker, the training worker and the active model",
    responses={
        200: inline_serializer(
            "Health",
            fields={
                "status": serializers.CharField(),
                "database": _check,
                "broker": _check,
                "worker": _check,
                "model": _check,
            },
        ),
        503: OpenApiResponse(description="A dependency is down; the body has the same shape."),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
def health(request: Request) -> Response:
    healthy, report = health_report()
    return Response(report, status=status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE)
