"""The reaper's writes: runs whose worker is gone, and runs whose queue message was lost.

``run_reap_stale`` re-queues (to resume from the last epoch checkpoint), fails or cancels running
runs without a recent heartbeat; ``run_requeue_lost_messages`` sends again runs queued too long;
``run_reap_at_worker_start`` is what a starting worker runs for the runs it held before a crash.
The periodic tasks (runs/tasks.py, ``maintenance`` queue) call them. Every change is a
conditional UPDATE, so two reapers (or a late heartbeat) never both win.

Imports classifier.models and classifier.runs.services (to enqueue) besides Django.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from classifier.models import TrainingRun
from classifier.runs import services

log = logging.getLogger(__name__)
Status = TrainingRun.Status


def run_reap_stale(*, timeout_seconds: int | None = None, lost_worker: str | None = None) -> list[int]:
    """Handle running runs whose worker is gone; returns the ids it changed.

    A run is stale when its heartbeat is older than the timeout, or when it was claimed by
    ``lost_worker`` (a worker that has just started cannot be running anything yet). A stale
    run is re-queued to resume from its last epoch checkpoint while it has been started fewer
    than BREEDLAB_MAX_RUN_ATTEMPTS times, otherwise it fails ("worker lost"). Each run is
    flipped with a conditional update so two reapers (or a late heartbeat) never both win.
    """
    timeout = timeout_seconds if timeout_seconds is not None else settings.BREEDLAB_HEARTBEAT_TIMEOUT
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale_q = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, started_at__lt=cutoff)
    if lost_worker:
        stale_q |= Q(worker=lost_worker)
    max_attempts = settings.BREEDLAB_MAX_RUN_ATTEMPTS
    reaped = []
    stale = TrainingRun.objects.filter(stale_q, status=Status.RUNNING).values_list("id", "attempts", "cancel_requested")
    for run_id, attempts, cancel_requested in stale:
        still_stale = TrainingRun.objects.filter(stale_q, id=run_id, status=Status.RUNNING, attempts=attempts)
        if cancel_requested:
            # Its user asked to stop it: the lost worker's run ends cancelled, never resumed.
            updated = still_stale.update(
                status=Status.CANCELLED,
                finished_at=timezone.now(),
                progress_detail={"stage": "cancelled"},
                error=_("Cancelled; its worker was lost before it could stop."),
            )
            if updated == 1:
                reaped.append(run_id)
                log.warning("run %s: worker lost after a cancel request, marked cancelled", run_id)
        elif attempts < max_attempts:
            updated = still_stale.update(
                status=Status.QUEUED,
                worker="",
                heartbeat_at=None,
                progress_detail={
                    "stage": "queued",
                    "note": f"Worker lost during attempt {attempts}; re-queued to resume from the last saved epoch.",
                },
            )
            if updated == 1:
                reaped.append(run_id)
                log.warning("run %s: worker lost during attempt %s, re-queued to resume", run_id, attempts)
                transaction.on_commit(lambda rid=run_id: services.run_enqueue(run_id=rid))
        else:
            updated = still_stale.update(
                status=Status.FAILED,
                finished_at=timezone.now(),
                progress_detail={"stage": "failed"},
                error=(
                    f"Worker lost: no heartbeat for more than {timeout} seconds"
                    f" after {attempts} attempt(s) (limit {max_attempts})."
                ),
            )
            if updated == 1:
                reaped.append(run_id)
                log.warning("run %s: worker lost, marked failed", run_id)
    return reaped


def run_requeue_lost_messages(*, after_seconds: int | None = None) -> list[int]:
    """Send again the runs still queued ``after_seconds`` after they were last sent (their message
    was lost). Each is taken with a conditional update on ``enqueued_at``, so two reapers never
    both send it; a duplicate message would be harmless anyway (the claim is atomic)."""
    after = after_seconds if after_seconds is not None else settings.BREEDLAB_REQUEUE_AFTER_SECONDS
    now = timezone.now()
    cutoff = now - timedelta(seconds=after)
    waiting = Q(enqueued_at__lt=cutoff) | Q(enqueued_at__isnull=True, created_at__lt=cutoff)
    sent = []
    for run_id, enqueued_at in TrainingRun.objects.filter(waiting, status=Status.QUEUED).values_list("id", "enqueued_at"):
        if TrainingRun.objects.filter(id=run_id, status=Status.QUEUED, enqueued_at=enqueued_at).update(enqueued_at=now) != 1:
            continue  # another reaper took it, or it left the queue
        log.warning("run %s: still queued %s s after it was sent; sending it again", run_id, after)
        services.run_enqueue(run_id=run_id)
        sent.append(run_id)
    return sent


def run_reap_at_worker_start(*, worker: str) -> list[int]:
    """Called when a worker starts: runs it held before a crash are lost, whatever their heartbeat."""
    close_old_connections()
    try:
        return run_reap_stale(lost_worker=worker)
    finally:
        connection.close()  # the worker forks its pool next; children must not share this socket
