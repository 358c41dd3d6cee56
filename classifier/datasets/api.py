"""Datasets over the API: list, the validation report of one, and archive upload (staff).

Thin: it parses the request, calls services and selectors, and renders. Imports
classifier.datasets.forms, classifier.datasets.selectors, classifier.datasets.services,
classifier.models, classifier.web.errors (besides Django and libraries); never another domain's
views or api.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from classifier.datasets import selectors
from classifier.datasets import services as dataset_services
from classifier.datasets.forms import ArchiveSizeLimit
from classifier.models import Dataset
from classifier.web.errors import error_response


class StaffCanWrite(BasePermission):
    """Everyone may read (as on the pages); only staff may import."""

    message = "Only staff may import datasets."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or bool(request.user and request.user.is_staff)


class LimitedMultiPartParser(MultiPartParser):
    """Multipart parsing that stops reading once the archive passes BREEDLAB_MAX_ARCHIVE_BYTES."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = parser_context["request"]
        limit = ArchiveSizeLimit(request._request)
        request._request.upload_handlers.insert(0, limit)
        result = super().parse(stream, media_type, parser_context)
        if limit.exceeded:
            raise ArchiveTooLarge(limit.message())
        return result


class ArchiveTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "archive_too_large"


class DatasetSummarySerializer(serializers.ModelSerializer):
    images = serializers.IntegerField(source="image_count")
    usable = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = ["id", "name", "version", "classes", "images", "status", "usable"]

    def get_usable(self, dataset: Dataset) -> bool:
        return dataset.status == Dataset.Status.READY and not dataset.problems


class DatasetDetailSerializer(DatasetSummarySerializer):
    parent = serializers.PrimaryKeyRelatedField(read_only=True)
    split = serializers.SerializerMethodField()

    class Meta(DatasetSummarySerializer.Meta):
        fields = [*DatasetSummarySerializer.Meta.fields, "parent", "description", "error", "created_at", "split", "report"]

    def get_split(self, dataset: Dataset) -> dict:
        split = dataset.split or {}
        return {
            "train": len(split.get("train", [])),
            "val": len(split.get("val", [])),
            "test": len(split.get("test", [])),
            "seed": split.get("seed"),
            "val_fraction": split.get("val_fraction"),
            "test_fraction": split.get("test_fraction"),
        }


class DatasetUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    archive = serializers.FileField(help_text="ZIP or tar archive in ImageFolder layout (one folder per class).")
    description = serializers.CharField(required=False, allow_blank=True, default="")
    seed = serializers.IntegerField(required=False, min_value=0, max_value=2**31 - 1, default=dataset_services.DEFAULT_SEED)
    val_fraction = serializers.FloatField(
        required=False,
        min_value=dataset_services.MIN_VAL_FRACTION,
        max_value=dataset_services.MAX_VAL_FRACTION,
        default=dataset_services.DEFAULT_VAL_FRACTION,
    )


_error = inline_serializer("DatasetError", fields={"error": serializers.CharField(), "id": serializers.IntegerField(required=False)})


@extend_schema_view(
    get=extend_schema(summary="List datasets", responses={200: DatasetSummarySerializer(many=True)}),
    post=extend_schema(
        summary="Import a dataset archive (staff token)",
        description=(
            "Multipart upload of a ZIP or tar archive in ImageFolder layout. The archive is extracted safely "
            "and every photo is checked; 201 returns the new dataset with its validation report. Unsafe or "
            "damaged archives get 400 with the reason (and the id of the failed dataset row, when one was made)."
        ),
        request={"multipart/form-data": DatasetUploadSerializer},
        responses={
            201: DatasetDetailSerializer,
            400: OpenApiResponse(_error, description="Invalid fields, or the archive was refused."),
            401: OpenApiResponse(_error, description="No or invalid credentials."),
            403: OpenApiResponse(_error, description="Not staff."),
            413: OpenApiResponse(_error, description="The archive is larger than BREEDLAB_MAX_ARCHIVE_BYTES."),
        },
    ),
)
class DatasetListView(GenericAPIView):
    # Token first, so a request without credentials gets 401 with "WWW-Authenticate: Token".
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [StaffCanWrite]
    parser_classes = [LimitedMultiPartParser]
    serializer_class = DatasetUploadSerializer
    pagination_class = None

    def get(self, request: Request) -> Response:
        return Response(DatasetSummarySerializer(selectors.dataset_list(), many=True).data)

    def post(self, request: Request) -> Response:
        upload = DatasetUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        try:
            dataset = dataset_services.dataset_import_upload(
                name=data["name"],
                upload=data["archive"],
                created_by=request.user,
                description=data["description"],
                seed=data["seed"],
                val_fraction=data["val_fraction"],
            )
        except dataset_services.DatasetError as exc:
            response = error_response(str(exc))
            if exc.dataset is not None:
                response.data["id"] = exc.dataset.pk
            return response
        return Response(DatasetDetailSerializer(dataset).data, status=status.HTTP_201_CREATED)


@extend_schema(
    summary="One dataset with its validation report",
    responses={200: DatasetDetailSerializer, 404: OpenApiResponse(_error, description="No such dataset.")},
)
class DatasetDetailView(GenericAPIView):
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    serializer_class = DatasetDetailSerializer
    queryset = Dataset.objects.all()

    def get(self, request: Request, pk: int) -> Response:
        dataset = Dataset.objects.filter(pk=pk).first()
        if dataset is None:
            raise exceptions.NotFound("No such dataset.")
        return Response(DatasetDetailSerializer(dataset).data)
