"""Training runs over the API: start (staff), list, one run with its epochs, cancel (staff).

Writes need a staff user: a token (``Authorization: Token <key>``, see ``manage.py
create_api_token``) or the browser session with its CSRF token.

Thin: it parses the request, calls services and selectors, and renders. Imports
classifier.datasets.selectors, classifier.models, classifier.runs.config, classifier.runs.selectors,
classifier.runs.services, classifier.versions.selectors, classifier.web.errors (besides Django and
libraries); never another domain's views or api.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.permissions import SAFE_METHODS, BasePermission, IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.datasets import selectors as datasets_selectors
from classifier.models import Dataset, EpochMetric, TrainingRun
from classifier.runs import selectors
from classifier.runs import services as run_services
from classifier.runs.config import AUTO_BACKBONE, RUN_FIELDS, RunConfigError
from classifier.versions import selectors as versions_selectors
from classifier.web.access import hide_from_anonymous
from classifier.web.errors import error_response, get_or_404


class StaffWrites(BasePermission):
    """Everyone may read (as on the pages); only staff may start or cancel runs."""

    message = "Only staff may start or cancel training runs."

    def has_permission(self, request, view) -> bool:
        return request.method in SAFE_METHODS or bool(request.user and request.user.is_staff)


# ---------------------------------------------------------------------------------------------
# Serializers
# ---------------------------------------------------------------------------------------------
class EpochSerializer(serializers.ModelSerializer):
    class Meta:
        model = EpochMetric
        fields = ["phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


class RunDatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = ["id", "name", "version"]


class RunSummarySerializer(serializers.ModelSerializer):
    dataset = RunDatasetSerializer(read_only=True)
    backbone = serializers.CharField(
        read_only=True,
        help_text='The network the run uses: an "auto" run\'s choice once its results name it (e.g. efficientnet_lite2), '
        '"auto" before.',
    )
    backbone_auto = serializers.BooleanField(read_only=True, help_text='The configuration said "auto": the run chooses the network.')
    optimizer = serializers.CharField(read_only=True)
    created_by = serializers.CharField(source="created_by.get_username", default=None, read_only=True)
    url = serializers.CharField(source="get_absolute_url", read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id", "url", "status", "dataset", "backbone", "backbone_auto", "optimizer", "progress", "best_val_acc", "created_by",
            "created_at", "started_at", "finished_at",
        ]

    def to_representation(self, instance):
        return hide_from_anonymous(super().to_representation(instance), self.context.get("request"), ("created_by", "worker"))


class RunDetailSerializer(RunSummarySerializer):
    epochs = EpochSerializer(many=True, read_only=True)
    metrics = serializers.SerializerMethodField(
        help_text="Final metrics of a succeeded run: test_acc / test_top5 (the test split, scored once), head_test_acc "
        "(the converged head alone), finetune_gain_test, finetuned_test_acc (the last fine-tune epoch, kept or not; nothing "
        "is chosen on it), kept {phase, epoch, why}, val_acc, train/val/test_images, seconds."
    )
    plan = serializers.SerializerMethodField(
        help_text="The run's plan: path, views, finetune_epochs, budget_s, estimates (seconds per stage), total_s."
    )
    notes = serializers.SerializerMethodField()
    promotion = serializers.SerializerMethodField()
    model_version = serializers.SerializerMethodField()
    traceback = serializers.SerializerMethodField(help_text="Staff only; empty for others.")

    class Meta(RunSummarySerializer.Meta):
        fields = RunSummarySerializer.Meta.fields + [
            "config", "progress_detail", "heartbeat_at", "attempts", "worker", "cancel_requested",
            "promote_when_done", "error", "traceback", "metrics", "plan", "notes", "promotion", "model_version", "epochs",
        ]

    def get_metrics(self, run: TrainingRun) -> dict:
        return (run.result or {}).get("metrics", {})

    def get_plan(self, run: TrainingRun) -> dict | None:
        return (run.result or {}).get("plan") or (run.progress_detail or {}).get("plan")

    def get_notes(self, run: TrainingRun) -> list[str]:
        return list((run.result or {}).get("notes", []))

    def get_promotion(self, run: TrainingRun) -> dict | None:
        return (run.result or {}).get("promotion")

    def get_model_version(self, run: TrainingRun) -> int | None:
        version = versions_selectors.run_model_version(run)
        return version.pk if version else None

    def get_traceback(self, run: TrainingRun) -> str:
        request = self.context.get("request")
        return run.traceback if request is not None and request.user.is_staff else ""


class RunCreateSerializer(serializers.Serializer):
    dataset = serializers.CharField(
        help_text="The dataset's id, or its name (the newest ready version), or NAME:vN for a version."
    )
    config = serializers.DictField(
        required=False,
        default=dict,
        help_text=f"Any of: {', '.join(RUN_FIELDS)}. Missing keys get the benchmarked recipe's defaults; backbone: "
        f"a name from python -m training backbones, or {AUTO_BACKBONE} (the default): the strongest EfficientNet-Lite "
        "that fits the time budget, chosen by the run.",
    )
    promote_when_done = serializers.BooleanField(required=False, default=False)

    def validate(self, attrs):
        # A misspelt or misplaced key must not start a run with other settings than the ones asked for.
        unknown = sorted(set(self.initial_data) - set(self.fields)) if hasattr(self.initial_data, "keys") else []
        if unknown:
            settings = [key for key in unknown if key in RUN_FIELDS]
            hint = f' Run settings go inside "config", e.g. {{"config": {{"{settings[0]}": ...}}}}.' if settings else ""
            raise serializers.ValidationError(
                f"Unknown field(s): {', '.join(unknown)}; valid: {', '.join(self.fields)}.{hint}"
            )
        return attrs


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------
class RunListView(APIView):
    permission_classes = [StaffWrites]

    @extend_schema(
        summary="Training runs, newest first",
        parameters=[
            OpenApiParameter("status", str, enum=TrainingRun.Status.values),
            OpenApiParameter(
                "backbone", str,
                description="Runs configured with this network or that used it (an auto run once it has chosen); auto: "
                "every run configured to choose automatically.",
            ),
            OpenApiParameter("dataset", int),
            OpenApiParameter("limit", int),
            OpenApiParameter("offset", int),
        ],
        responses={200: RunSummarySerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        status_filter = request.query_params.get("status") or None
        if status_filter and status_filter not in TrainingRun.Status.values:
            return error_response(f"Unknown status {status_filter!r}; valid: {', '.join(TrainingRun.Status.values)}.")
        dataset = request.query_params.get("dataset") or None
        if dataset and not dataset.isdigit():
            return error_response("dataset must be a dataset id.")
        runs = selectors.run_list(
            status=status_filter, backbone=request.query_params.get("backbone") or None,
            dataset_id=int(dataset) if dataset else None,
        )
        paginator = LimitOffsetPagination()
        paginator.default_limit = 50
        paginator.max_limit = 500
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(RunSummarySerializer(page, many=True, context={"request": request}).data)

    @extend_schema(
        summary="Start a fine-tuning run (staff)",
        request=RunCreateSerializer,
        responses={
            201: RunDetailSerializer,
            400: OpenApiResponse(description='{"error": ...}: invalid configuration, or the dataset cannot be trained on.'),
            403: OpenApiResponse(description="Not staff (or a missing CSRF token with session authentication)."),
        },
    )
    def post(self, request: Request) -> Response:
        payload = RunCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            dataset = datasets_selectors.dataset_get_by_ref(payload.validated_data["dataset"])
        except Dataset.DoesNotExist:
            return error_response(f"No dataset {payload.validated_data['dataset']!r}.")
        try:
            run = run_services.run_create(
                dataset=dataset,
                config=payload.validated_data["config"],
                created_by=request.user,
                promote_when_done=payload.validated_data["promote_when_done"],
            )
        except RunConfigError as exc:
            body = {"error": exc.message}
            if exc.field:
                body["field"] = exc.field
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        except run_services.RunError as exc:
            return error_response(str(exc))
        data = RunDetailSerializer(run, context={"request": request}).data
        response = Response(data, status=status.HTTP_201_CREATED)
        response["Location"] = f"/api/runs/{run.pk}"
        return response


class RunDetailView(APIView):
    permission_classes = [StaffWrites]

    @extend_schema(summary="One run: status, progress, per-epoch metrics, final metrics", responses={200: RunDetailSerializer})
    def get(self, request: Request, pk: int) -> Response:
        run = get_or_404(TrainingRun.objects.select_related("dataset", "created_by"), pk)
        return Response(RunDetailSerializer(run, context={"request": request}).data)


class RunCancelView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Cancel a run (staff): a queued run ends at once, a running one after its current batch",
        request=None,
        responses={200: RunDetailSerializer, 409: OpenApiResponse(description='{"error": ...}: the run has already ended.')},
    )
    def post(self, request: Request, pk: int) -> Response:
        run = get_or_404(TrainingRun.objects.select_related("dataset", "created_by"), pk)
        try:
            run = run_services.run_cancel(run=run)
        except run_services.RunError as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT)
        return Response(RunDetailSerializer(run, context={"request": request}).data)
