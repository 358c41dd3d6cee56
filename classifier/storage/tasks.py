"""Thin Celery tasks of storage: the periodic purge of deleted items after their grace period.

The task name keeps the historical "classifier.tasks.*" form (see runs/tasks.py). Imports only
storage.services.
"""

from __future__ import annotations

from celery import shared_task

from classifier.storage import services as storage_services


@shared_task(name="classifier.tasks.purge_deleted", ignore_result=True, expires=800)
def purge_deleted() -> dict[str, int]:
    """Periodic (beat): remove files and rows of items deleted longer ago than the grace period."""
    return storage_services.purge_deleted()
