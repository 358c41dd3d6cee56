"""Reads about model versions: the active one, the list, the version a run registered.

Imports classifier.models only.
"""

from __future__ import annotations

import re

from django.db.models import QuerySet

from classifier.models import ModelVersion, TrainingRun

# The shared cache's announcement of each promotion ({"id", "promoted_at"}, written after the commit by
# versions/services.py); serving reads it in a request's admission round trip to skip the active-version
# query while it is unchanged (serving/cache.py get_active).
ACTIVE_MODEL_CACHE_KEY = "breedlab:active_model"


def model_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).select_related("run").first()


def model_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(deleted_at__isnull=True).select_related("run", "run__dataset", "promoted_by")


def run_model_version(run: TrainingRun) -> ModelVersion | None:
    return ModelVersion.objects.filter(run=run).first()


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", str(name).lower()).strip()


def model_within_builtin(version: ModelVersion) -> bool | None:
    """Whether a fine-tuned version's classes are all among the built-in model's 118 ImageNet dog
    breeds (by name or WordNet id); None for the built-in model itself or when it does not exist."""
    if version.is_builtin:
        return None
    builtin = ModelVersion.objects.filter(kind=ModelVersion.Kind.BUILTIN).only("class_names", "metrics").first()
    if builtin is None or not version.class_names:
        return None
    known = {_key(n) for n in builtin.class_names} | set(builtin.metrics.get("wnids") or [])
    return all(_key(n) in known or n in known for n in version.class_names)
