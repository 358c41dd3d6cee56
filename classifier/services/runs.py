"""Writes for training runs."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from classifier.models import TrainingRun

log = logging.getLogger(__name__)


def run_reap_stale(*, timeout_seconds: int | None = None) -> list[int]:
    """Mark running runs whose heartbeat is older than the timeout as failed ("worker lost").

    A worker killed mid-run cannot report its own death; this is how such runs stop
    looking "running" forever. Each run is flipped with a conditional update so two reapers
    (or a late heartbeat) never both win.
    """
    timeout = timeout_seconds if timeout_seconds is not None else settings.BREEDLAB_HEARTBEAT_TIMEOUT
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    )
    reaped = []
    for run_id in stale.values_list("id", flat=True):
        updated = TrainingRun.objects.filter(
            Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True),
            id=run_id,
            status=TrainingRun.Status.RUNNING,
        ).update(
            status=TrainingRun.Status.FAILED,
            finished_at=timezone.now(),
            error=f"Worker lost: no heartbeat for more than {timeout} seconds.",
        )
        if updated == 1:
            reaped.append(run_id)
            log.warning("run %s: worker lost, marked failed", run_id)
    return reaped
