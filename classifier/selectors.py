"""Reads used by views and the API. Writes live in services."""

from __future__ import annotations

from django.db.models import QuerySet

from classifier.models import Dataset, ModelVersion, Prediction, TrainingRun


def model_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).select_related("run").first()


def model_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("run", "run__dataset", "promoted_by")


def run_list(*, status: str | None = None, backbone: str | None = None, dataset_id: int | None = None) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.select_related("dataset", "created_by")
    if status:
        runs = runs.filter(status=status)
    if backbone:
        runs = runs.filter(config__backbone=backbone)
    if dataset_id:
        runs = runs.filter(dataset_id=dataset_id)
    return runs


def dataset_list() -> QuerySet[Dataset]:
    return Dataset.objects.select_related("created_by")


def prediction_recent(*, limit: int = 10) -> QuerySet[Prediction]:
    return Prediction.objects.select_related("model_version")[:limit]
