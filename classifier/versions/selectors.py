"""Reads about model versions: the active one, the list, the version a run registered.

Imports classifier.models only.
"""

from __future__ import annotations

from django.db.models import QuerySet

from classifier.models import ModelVersion, TrainingRun


def model_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).select_related("run").first()


def model_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("run", "run__dataset", "promoted_by")


def run_model_version(run: TrainingRun) -> ModelVersion | None:
    return ModelVersion.objects.filter(run=run).first()
