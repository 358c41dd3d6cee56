"""Runs never stuck, never doubled (issue 13, bullet 7)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from classifier.models import TrainingRun
from classifier.runs import reaper
from classifier.runs import services as run_services
from tests.classifier.runs.test_services import FakeResult, queued_run

pytestmark = pytest.mark.django_db
Status = TrainingRun.Status


def test_reapers_go_to_the_maintenance_queue_and_runs_to_training():
    from config.celery import app

    router = app.amqp.router
    for name, queue in (("classifier.tasks.execute_run", "training"), ("classifier.tasks.reap_stale_runs", "maintenance"),
                        ("classifier.tasks.reap_interrupted_imports", "maintenance")):
        route = router.route({}, name, args=(), kwargs={})
        assert route["queue"].name == queue, name
    for entry in app.conf.beat_schedule.values():
        assert router.route({}, entry["task"], args=(), kwargs={})["queue"].name == "maintenance", entry["task"]


def test_a_stale_run_whose_cancel_was_requested_is_cancelled_never_resumed(make_run, enqueued, settings):
    settings.BREEDLAB_MAX_RUN_ATTEMPTS = 5
    long_ago = timezone.now() - timedelta(hours=1)
    run = make_run(status=Status.RUNNING, started_at=long_ago, heartbeat_at=long_ago, attempts=1, cancel_requested=True)
    assert reaper.run_reap_stale(timeout_seconds=60) == [run.pk]
    run.refresh_from_db()
    assert run.status == Status.CANCELLED and run.finished_at is not None
    assert enqueued == []


def test_a_run_queued_too_long_is_sent_again_once_per_period(make_run, enqueued, settings):
    old = make_run(status=Status.QUEUED)
    TrainingRun.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    recent = make_run(status=Status.QUEUED)
    TrainingRun.objects.filter(pk=recent.pk).update(enqueued_at=timezone.now())
    assert reaper.run_requeue_lost_messages(after_seconds=600) == [old.pk]
    assert [call["args"] for call in enqueued] == [[old.pk]]
    assert reaper.run_requeue_lost_messages(after_seconds=600) == []  # just sent: not again yet
    old.refresh_from_db()
    assert old.enqueued_at is not None and old.status == Status.QUEUED


def test_the_heartbeat_thread_survives_database_errors():
    calls = []

    class Reporter:
        run_id = 7

        def beat(self):
            calls.append(1)
            if len(calls) <= 2:
                raise OperationalError("database is locked")

    beat = run_services._Heartbeat(Reporter(), interval=0.02)
    beat.start()
    deadline = timezone.now() + timedelta(seconds=10)
    while len(calls) < 5 and timezone.now() < deadline:
        beat.join(0.05)
    alive = beat.is_alive()
    beat.stop()
    assert alive and len(calls) >= 5  # kept beating after the two errors


def test_an_attempt_that_lost_the_run_writes_nothing_more(make_dataset, monkeypatch):
    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}))
    calibrated = []

    def fake_finetune(config, *, out_dir, reporter, resume):
        TrainingRun.objects.filter(pk=run.pk).update(attempts=2)  # the reaper gave the run to a second attempt
        return FakeResult(out_dir)

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    monkeypatch.setattr(run_services, "_calibrate", lambda *a, **k: calibrated.append(a) or {})
    assert run_services.run_execute(run_id=run.pk) is None
    assert calibrated == []  # no calibration files written into the other attempt's folder
    run.refresh_from_db()
    assert run.status == Status.RUNNING and run.attempts == 2
