"""Thin Celery tasks of serving: the periodic retention clean-up (on the `maintenance` queue).

The task name follows the historical "classifier.tasks.*" pattern (see runs/tasks.py). Imports
only serving.services.
"""

from __future__ import annotations

from celery import shared_task

from classifier.serving import services as serving_services


@shared_task(name="classifier.tasks.purge_anonymous_predictions", ignore_result=True, expires=3600)
def purge_anonymous_predictions() -> int:
    """Periodic (beat): remove anonymous predictions and their photos after the retention period."""
    return serving_services.prediction_purge_anonymous()
