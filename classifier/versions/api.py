"""Model versions over the API: list, promote (staff), roll back (staff).

Thin: it parses the request, calls services and selectors, and renders. Imports classifier.models,
classifier.versions.selectors, classifier.versions.services, classifier.web.errors (besides Django
and libraries); never another domain's views or api.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.models import ModelVersion
from classifier.versions import selectors
from classifier.versions import services as version_services
from classifier.web.access import hide_from_anonymous
from classifier.web.errors import error_response, get_or_404


class ModelVersionSerializer(serializers.ModelSerializer):
    run = serializers.PrimaryKeyRelatedField(read_only=True)
    val_acc = serializers.FloatField(read_only=True, allow_null=True)
    promoted_by = serializers.CharField(source="promoted_by.get_username", default=None, read_only=True)

    class Meta:
        model = ModelVersion
        fields = [
            "id", "name", "kind", "backbone", "run", "class_names", "val_acc", "metrics", "is_active", "created_at",
            "promoted_at", "promoted_by",
        ]

    def to_representation(self, instance):
        return hide_from_anonymous(super().to_representation(instance), self.context.get("request"), ("promoted_by",))


class ModelListView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(summary="Model versions, newest first, with their metrics and which one serves",
                   responses={200: ModelVersionSerializer(many=True)})
    def get(self, request: Request) -> Response:
        return Response(ModelVersionSerializer(selectors.model_list(), many=True, context={"request": request}).data)


class ModelPromoteView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Make this version the one that serves (staff); web processes switch on their next request",
        request=None,
        responses={200: ModelVersionSerializer, 409: OpenApiResponse(description='{"error": ...}: its files are missing.')},
    )
    def post(self, request: Request, pk: int) -> Response:
        version = get_or_404(ModelVersion.objects.all(), pk)
        try:
            version = version_services.model_promote(version=version, user=request.user)
        except version_services.VersionError as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT)
        return Response(ModelVersionSerializer(version, context={"request": request}).data)


class ModelRollbackView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Serve again the version that was active before the current one (staff)",
        request=None,
        responses={200: ModelVersionSerializer, 409: OpenApiResponse(description='{"error": ...}: nothing to roll back to.')},
    )
    def post(self, request: Request) -> Response:
        try:
            version = version_services.model_rollback(user=request.user)
        except version_services.VersionError as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT)
        return Response(ModelVersionSerializer(version, context={"request": request}).data)
