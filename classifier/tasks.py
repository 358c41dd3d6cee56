"""Thin Celery tasks: they receive ids, call a service, and return."""

from __future__ import annotations

from celery import shared_task

from classifier.services import runs as run_services


@shared_task(name="classifier.tasks.reap_stale_runs", ignore_result=True)
def reap_stale_runs() -> list[int]:
    """Periodic: fail runs whose worker stopped sending heartbeats."""
    return run_services.run_reap_stale()
