"""A real Redis, a real Celery worker process, a real task, a real database row."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from classifier.models import TrainingRun
from tests.classifier.worker_fixtures import worker_env
from tests.services import start_worker, stop_process

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def celery_app(redis_url):
    from config.celery import app

    with app.connection_for_write(redis_url) as conn:
        conn.default_channel.client.delete("training", "maintenance")  # start from empty queues
        yield app, conn


@pytest.fixture
def worker(celery_app, redis_url, tmp_path, settings):
    proc = start_worker(
        env=worker_env(redis_url=redis_url, settings=settings, var_dir=tmp_path / "var"), name="itest",
        queues="maintenance", log=tmp_path / "worker.log",
    )  # the reapers' own queue (CELERY_TASK_ROUTES)
    yield proc
    stop_process(proc)


def test_a_real_worker_runs_a_task_sent_through_redis(worker, celery_app, make_run, tmp_path):
    _app, conn = celery_app
    from classifier.runs.tasks import reap_stale_runs

    long_ago = timezone.now() - timedelta(hours=1)
    # Two attempts used up (the default BREEDLAB_MAX_RUN_ATTEMPTS): the reaper fails it instead of re-queueing.
    stale = make_run(status=TrainingRun.Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago, attempts=2)
    alive = make_run(status=TrainingRun.Status.RUNNING, started_at=long_ago, heartbeat_at=timezone.now())

    reap_stale_runs.apply_async(connection=conn)

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        stale.refresh_from_db()
        if stale.status != TrainingRun.Status.RUNNING:
            break
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        time.sleep(0.3)
    assert stale.status == TrainingRun.Status.FAILED, (tmp_path / "worker.log").read_text()
    assert "Worker lost" in stale.error
    alive.refresh_from_db()
    assert alive.status == TrainingRun.Status.RUNNING
