"""DbReporter: throttled progress with an ETA, one EpochMetric per epoch, heartbeat, cancellation."""

from __future__ import annotations

import pytest

from classifier.models import EpochMetric, TrainingRun
from classifier.runs.reporter import DbReporter
from training.reporting import Reporter

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def running(make_run):
    return make_run(status=TrainingRun.Status.RUNNING, attempts=1, config={"head_epochs": 2, "finetune_epochs": 2})


def reporter_for(run, clock, interval=1.0) -> DbReporter:
    return DbReporter(run_id=run.pk, attempt=1, config=run.config, interval=interval, clock=clock)


def test_it_implements_the_training_reporter_protocol(running):
    assert isinstance(reporter_for(running, Clock()), Reporter)


def test_batch_progress_is_written_at_most_once_per_interval_with_an_eta(running, django_assert_num_queries):
    clock = Clock()
    reporter = reporter_for(running, clock)
    reporter.on_phase_start(phase="head", epochs=2, batches_per_epoch=10)
    reporter.on_batch(phase="head", epoch=1, batch=1, batches=10, loss=2.0)  # due: written
    clock.now += 0.2
    with django_assert_num_queries(0):
        reporter.on_batch(phase="head", epoch=1, batch=2, batches=10, loss=1.9)  # throttled
    clock.now += 1.0
    reporter.on_batch(phase="head", epoch=1, batch=3, batches=10, loss=1.8)
    running.refresh_from_db()
    detail = running.progress_detail
    assert (detail["phase"], detail["epoch"], detail["batch"], detail["batches"], detail["loss"]) == ("head", 1, 3, 10, 1.8)
    # 2 steps took 1.2 s; 40 steps in all, 37 to go.
    assert detail["eta_seconds"] == pytest.approx(1.2 / 2 * 37, rel=1e-3)
    assert running.progress == pytest.approx(3 / 40)
    assert running.heartbeat_at is not None


def test_the_finetune_phase_continues_the_progress_of_the_head_phase(running):
    reporter = reporter_for(running, Clock())
    reporter.on_phase_start(phase="finetune", epochs=2, batches_per_epoch=10)
    reporter.on_batch(phase="finetune", epoch=2, batch=10, batches=10, loss=0.5)
    running.refresh_from_db()
    assert running.progress == pytest.approx(0.99)  # 40/40 is capped until the run has really finished


def test_epochs_are_written_once_even_when_a_resumed_run_reports_them_again(running):
    reporter = reporter_for(running, Clock())
    reporter.on_phase_start(phase="head", epochs=2, batches_per_epoch=4)
    metrics = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 0.9, "val_acc": 0.6, "lr": 1e-3, "seconds": 2.0}
    reporter.on_epoch_end(phase="head", epoch=1, metrics=metrics)
    reporter.on_epoch_end(phase="head", epoch=1, metrics={**metrics, "val_acc": 0.7})
    rows = list(EpochMetric.objects.filter(run=running).values_list("phase", "epoch", "val_acc"))
    assert rows == [("head", 1, 0.7)]
    running.refresh_from_db()
    assert running.best_val_acc == pytest.approx(0.7)


def test_the_best_validation_accuracy_never_goes_down_and_nan_is_stored_as_nothing(running):
    reporter = reporter_for(running, Clock())
    reporter.on_phase_start(phase="head", epochs=2, batches_per_epoch=4)
    reporter.on_epoch_end(phase="head", epoch=1, metrics={"val_acc": 0.8, "train_loss": float("nan")})
    reporter.on_epoch_end(phase="head", epoch=2, metrics={"val_acc": 0.6})
    running.refresh_from_db()
    assert running.best_val_acc == pytest.approx(0.8)
    assert EpochMetric.objects.get(run=running, epoch=1).train_loss is None


def test_should_stop_reads_the_cancel_flag(running):
    clock = Clock()
    reporter = reporter_for(running, clock)
    assert reporter.should_stop() is False
    TrainingRun.objects.filter(pk=running.pk).update(cancel_requested=True)
    clock.now += 1.0
    assert reporter.should_stop() is True


def test_a_reporter_whose_run_was_taken_over_stops_and_writes_nothing(running):
    clock = Clock()
    reporter = reporter_for(running, clock)
    TrainingRun.objects.filter(pk=running.pk).update(attempts=2, progress=0.3)
    reporter.on_phase_start(phase="head", epochs=2, batches_per_epoch=4)
    clock.now += 1.0
    reporter.on_epoch_end(phase="head", epoch=1, metrics={"val_acc": 0.9})
    assert reporter.should_stop() is True
    running.refresh_from_db()
    assert running.progress == pytest.approx(0.3) and not EpochMetric.objects.filter(run=running).exists()
