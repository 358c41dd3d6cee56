"""Thin Celery tasks of datasets: the periodic reaper of interrupted imports.

The task name keeps its historical string ("classifier.tasks.*", see runs/tasks.py). Imports
only datasets.services.
"""

from __future__ import annotations

from celery import shared_task

from classifier.datasets import services as dataset_services


@shared_task(name="classifier.tasks.reap_interrupted_imports", ignore_result=True, expires=500)
def reap_interrupted_imports() -> list[int]:
    """Periodic (beat): fail dataset imports whose web process stopped before finishing them."""
    return dataset_services.dataset_reap_interrupted()
