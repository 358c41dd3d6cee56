"""Model versions over the API: list, promote (staff), roll back (staff).

Thin: it parses the request, calls services and selectors, and renders. Imports classifier.models,
classifier.versions.selectors, classifier.versions.services, classifier.web.errors (besides Django
and libraries); never another domain's views or api.
"""

from __future__ import annotations

from django.utils.translation import gettext as _
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


def _may_export(request: Request) -> bool:
    from django.conf import settings

    return bool(settings.BREEDLAB_PUBLIC_MODEL_EXPORT or (request.user and request.user.is_staff))


class ModelExportView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Download the version as one zip: ONNX graph, safetensors weights, labels, preprocessing, "
                "not-a-dog thresholds, model card, README (staff, or anyone with BREEDLAB_PUBLIC_MODEL_EXPORT)",
        responses={(200, "application/zip"): bytes, 403: OpenApiResponse(description='{"error": ...}'),
                   409: OpenApiResponse(description='{"error": ...}: the built-in model, or its files are missing.')},
    )
    def get(self, request: Request, pk: int):
        from django.http import FileResponse

        if not _may_export(request):
            return error_response(_("Only staff may export models here."), status.HTTP_403_FORBIDDEN)
        version = get_or_404(ModelVersion.objects.all(), pk)
        try:
            path = version_services.model_export(version=version)
        except version_services.VersionError as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT)
        return FileResponse(path.open("rb"), as_attachment=True, filename=f"breedlab-model-{version.pk}.zip",
                            content_type="application/zip")


class ModelImportView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Import an exported model archive (staff): validated, then listed as an inactive version",
        request={"multipart/form-data": {"type": "object", "properties": {"archive": {"type": "string", "format": "binary"}}}},
        responses={201: ModelVersionSerializer, 400: OpenApiResponse(description='{"error": ...}: the reason it was refused.')},
    )
    def post(self, request: Request) -> Response:
        upload = request.FILES.get("archive")
        if upload is None:
            return error_response(_("Send the model archive as the multipart field 'archive'."), status.HTTP_400_BAD_REQUEST)
        try:
            version = version_services.model_import_upload(upload=upload, user=request.user)
        except version_services.VersionError as exc:
            return error_response(str(exc), status.HTTP_400_BAD_REQUEST)
        return Response(ModelVersionSerializer(version, context={"request": request}).data, status=status.HTTP_201_CREATED)
