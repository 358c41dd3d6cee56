"""Thin Celery tasks shared by the site: expired sessions cleared (on the `maintenance` queue).

Shared (web/); imports Django only.
"""

from __future__ import annotations

from celery import shared_task
from django.core.management import call_command


@shared_task(name="classifier.tasks.clear_sessions", ignore_result=True, expires=3600)
def clear_sessions() -> None:
    """Periodic (beat): `manage.py clearsessions` (expired sessions out of the database)."""
    call_command("clearsessions")
