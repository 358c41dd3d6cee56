"""Reads about predictions (the home page's recent ones).

Imports classifier.models only.
"""

from __future__ import annotations

from django.db.models import QuerySet

from classifier.models import Prediction


def prediction_recent(*, limit: int = 10) -> QuerySet[Prediction]:
    return Prediction.objects.select_related("model_version")[:limit]
