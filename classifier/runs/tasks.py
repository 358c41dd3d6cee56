"""Thin Celery tasks of training runs: they receive ids, call a runs service, and return.

Task names keep their historical strings ("classifier.tasks.*"): queued messages, the routes
(CELERY_TASK_ROUTES: execute_run to ``training``, the reapers to ``maintenance``) and the beat
schedule match on them. Imports only
runs.services and runs.reaper; services enqueue by importing this module inside run_enqueue (never at module
level), so the module graph has no cycle.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready

from classifier.runs import reaper
from classifier.runs import services as run_services

log = logging.getLogger(__name__)


def allow_child_processes() -> None:
    """Let this pool process start children (the DataLoader's image-decoding workers).

    Celery's prefork pool marks its processes daemonic, and multiprocessing refuses to start
    children from a daemonic process. Each pool process runs one task and exits
    (worker_max_tasks_per_child = 1), and the DataLoader joins its own workers, so nothing is
    left behind.
    """
    import multiprocessing

    process = multiprocessing.current_process()
    if process.daemon:
        process._config["daemon"] = False


@shared_task(name="classifier.tasks.execute_run", bind=True, ignore_result=True, acks_late=True)
def execute_run(self, run_id: int) -> str | None:
    """Train one run. Enqueued by runs.services.run_enqueue with time limits from its config."""
    allow_child_processes()
    return run_services.run_execute(run_id=int(run_id), worker=self.request.hostname or "")


# Reapers run on the `maintenance` queue (CELERY_TASK_ROUTES), never behind a training run; a
# message that still waited a whole period is superseded by the next one: drop it.
@shared_task(name="classifier.tasks.reap_stale_runs", ignore_result=True, expires=50)
def reap_stale_runs() -> list[int]:
    """Periodic (beat): re-queue, fail or cancel runs whose worker stopped sending heartbeats, and
    send again the runs whose queue message was lost."""
    return reaper.run_reap_stale() + reaper.run_requeue_lost_messages()


@worker_ready.connect
def reap_at_worker_start(sender=None, **kwargs) -> None:
    """A worker that starts cannot be running anything: runs it held before a crash are lost."""
    hostname = getattr(sender, "hostname", "") or ""
    try:
        reaped = reaper.run_reap_at_worker_start(worker=hostname)
    except Exception:  # never keep a worker from starting
        log.exception("reaper at worker start failed")
        return
    if reaped:
        log.warning("worker %s started: reaped runs %s", hostname, reaped)
