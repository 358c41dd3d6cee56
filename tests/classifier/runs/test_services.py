"""classifier.runs.services: create, enqueue, claim, execute (real tiny training and failure paths), cancel, reap."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from classifier.models import EpochMetric, ModelVersion, TrainingRun
from classifier.runs import reaper
from classifier.runs import services as run_services
from classifier.runs.config import RunConfigError
from tests.classifier.run_fixtures import TINY_CONFIG
from training.errors import Cancelled, NonFiniteLoss

pytestmark = pytest.mark.django_db
Status = TrainingRun.Status


def queued_run(dataset, config=None, **fields) -> TrainingRun:
    run = TrainingRun.objects.create(dataset=dataset, config={**TINY_CONFIG, **(config or {})}, **fields)
    run.out_dir = f"run-{run.pk}"
    run.save()
    return run


# ---- create / enqueue ---------------------------------------------------------------------------
def test_it_creates_a_queued_run_with_the_full_config_and_enqueues_its_id_after_commit(
    make_dataset, enqueued, django_capture_on_commit_callbacks, staff_user
):
    dataset = make_dataset(split={"train": ["a/1.jpg"], "val": ["a/2.jpg"]}, image_count=100)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = run_services.run_create(dataset=dataset, config={"optimizer": "momentum"}, created_by=staff_user)
        assert enqueued == []  # nothing is sent before the row is committed
    for callback in callbacks:
        callback()
    assert run.status == Status.QUEUED and run.out_dir == f"run-{run.pk}" and run.created_by == staff_user
    assert run.config["optimizer"] == "momentum" and run.config["head_epochs"] == 3  # recipe defaults filled in
    from training.config import recipe_lrs

    # Momentum's own tuned rates, stored as a person would type them (0.009, not 0.009000000000000001).
    assert (run.config["head_lr"], run.config["finetune_lr"]) == pytest.approx(recipe_lrs("momentum"), rel=1e-9)
    assert repr(run.config["finetune_lr"]) == "0.009"
    assert run.config["head_lr"] != run_services.runconfig.default_config()["head_lr"]
    assert len(enqueued) == 1 and enqueued[0]["args"] == [run.pk]
    assert 600 <= enqueued[0]["soft_time_limit"] < enqueued[0]["time_limit"]


def test_the_time_limit_grows_with_the_work_and_stops_at_the_maximum(settings):
    from classifier.runs.config import build_config, time_limit_seconds

    small = time_limit_seconds(build_config({"finetune_epochs": 1}), image_count=100)
    big = time_limit_seconds(build_config({"finetune_epochs": 20}), image_count=5000)
    assert 600 <= small < big <= settings.BREEDLAB_MAX_RUN_SECONDS
    settings.BREEDLAB_MAX_RUN_SECONDS = 900
    assert time_limit_seconds(build_config({"finetune_epochs": 20}), image_count=5000) == 900


def test_the_time_limit_of_an_automatic_run_counts_its_largest_candidate():
    from classifier.runs.config import build_config, time_limit_seconds

    auto = build_config({"finetune_epochs": 5})
    assert auto["backbone"] == "auto"  # the default, as in the CLI
    lite0 = {**auto, "backbone": "efficientnet_lite0"}
    lite2 = {**auto, "backbone": "efficientnet_lite2"}
    assert time_limit_seconds(auto, image_count=2000) == time_limit_seconds(lite2, image_count=2000)
    assert time_limit_seconds(auto, image_count=2000) > time_limit_seconds(lite0, image_count=2000)
    assert time_limit_seconds({**auto, "image_size": 224}, image_count=2000) == time_limit_seconds(
        {**lite0, "image_size": 224}, image_count=2000)


def test_validation_accepts_auto_and_still_rejects_unknown_networks_naming_auto():
    from classifier.runs.config import build_config

    assert build_config({})["backbone"] == "auto"
    assert build_config({"backbone": "auto"})["backbone"] == "auto"
    assert build_config({"backbone": "efficientnet_lite1"})["backbone"] == "efficientnet_lite1"
    with pytest.raises(RunConfigError, match="Unknown backbone 'Auto'; valid backbones are auto") as info:
        build_config({"backbone": "Auto"})
    assert info.value.field == "backbone"


def test_it_refuses_a_dataset_with_problems_and_says_why(make_dataset, enqueued):
    dataset = make_dataset(report={"problems": ["Class pug has only 2 usable images (at least 5 needed)."]},
                           split={"train": ["a"], "val": ["b"]})
    with pytest.raises(run_services.RunError, match="only 2 usable images"):
        run_services.run_create(dataset=dataset, config={})
    assert not TrainingRun.objects.exists()


def test_it_refuses_a_dataset_that_is_not_ready_or_has_no_split(make_dataset):
    with pytest.raises(run_services.RunError, match="not ready"):
        run_services.run_create(dataset=make_dataset(name="a", status="importing"), config={})
    with pytest.raises(run_services.RunError, match="no train/validation split"):
        run_services.run_create(dataset=make_dataset(name="b"), config={})


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"optimizer": "lbfgs"}, "optimizer", "Unknown optimizer"),
        ({"head_epochs": -1}, "head_epochs", "head_epochs must be"),
        ({"head_solver": "epochs", "head_epochs": 0, "finetune_epochs": 0}, None, "At least one"),
        ({"backbone": "vgg99"}, "backbone", "Unknown backbone"),
        ({"data_dir": "/etc"}, "data_dir", "cannot be set"),
        ({"val_fraction": 0.5}, "val_fraction", "split"),
        ({"colour": "red"}, "colour", "Unknown configuration key"),
    ],
)
def test_it_rejects_an_invalid_config_with_one_sentence(make_dataset, config, field, message):
    dataset = make_dataset(split={"train": ["a"], "val": ["b"]})
    with pytest.raises(RunConfigError, match=message) as info:
        run_services.run_create(dataset=dataset, config=config)
    assert info.value.field == field
    assert not TrainingRun.objects.exists()


def test_an_unreachable_broker_fails_the_run_with_that_reason(make_dataset, monkeypatch):
    from classifier.runs import tasks

    def broken(*args, **kwargs):
        raise ConnectionRefusedError("Connection refused")

    monkeypatch.setattr(tasks.execute_run, "apply_async", broken)
    run = TrainingRun.objects.create(dataset=make_dataset(), config=TINY_CONFIG)
    run_services.run_enqueue(run_id=run.pk)
    run.refresh_from_db()
    assert run.status == Status.FAILED and "task queue could not be reached" in run.error


# ---- claim ---------------------------------------------------------------------------------------
def test_a_run_is_claimed_once_even_when_its_task_is_delivered_twice(make_run):
    run = make_run()
    first = run_services.run_claim(run_id=run.pk, worker="w1@host")
    second = run_services.run_claim(run_id=run.pk, worker="w2@host")
    assert first is not None and first.status == Status.RUNNING and first.attempts == 1 and first.worker == "w1@host"
    assert second is None
    assert run_services.run_execute(run_id=run.pk, worker="w2@host") is None  # a duplicate delivery does nothing


# ---- execute: real training -----------------------------------------------------------------------
def test_a_run_trains_writes_its_epochs_registers_a_model_and_promotes_when_asked(tiny_dataset, settings):
    run = queued_run(tiny_dataset, promote_when_done=True)
    assert run_services.run_execute(run_id=run.pk, worker="w@h") == Status.SUCCEEDED
    run.refresh_from_db()
    assert run.status == Status.SUCCEEDED and run.progress == 1.0 and run.finished_at and run.error == ""
    assert list(run.epochs.values_list("phase", "epoch")) == [("head", 1), ("finetune", 1)]
    assert 0.0 <= run.best_val_acc <= 1.0
    out = Path(settings.RUNS_ROOT) / run.out_dir
    # the list shows the accuracy of the weights the run kept, the ones its model version serves
    assert run.best_val_acc == json.loads((out / "meta.json").read_text())["metrics"]["val_acc"]
    split = {part: tiny_dataset.split[part] for part in ("train", "val", "test")}
    assert json.loads((out / "split.json").read_text()) == split  # the dataset's own split
    test = json.loads((out / "test.json").read_text())
    assert sorted(p["path"] for p in test["predictions"]) == sorted(tiny_dataset.split["test"])
    assert run.result["metrics"]["test_acc"] == test["top1"] and run.result["metrics"]["kept"]["phase"] in ("head", "finetune")
    validation = json.loads((out / "validation.json").read_text())
    assert sorted(p["path"] for p in validation["predictions"]) == sorted(tiny_dataset.split["val"])
    version = ModelVersion.objects.get(run=run)
    assert version.path == run.out_dir and version.class_names == ["beagle", "chihuahua", "pug"]
    assert version.is_active and run.result["promotion"]["promoted"] is True  # only the built-in model was active
    # Its own not-a-dog thresholds, calibrated on its validation photos, serve with it.
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["validation"]["n"] == len(tiny_dataset.split["val"])
    assert run.result["calibration"]["thresholds"] == calibration["thresholds"]
    from classifier.serving import cache as inference

    inference.reset_current()
    assert inference.get_active().thresholds.source == "calibration.json"
    assert inference.get_active().thresholds.dog_mass == calibration["thresholds"]["dog_mass"]


def test_a_run_whose_calibration_fails_still_succeeds_and_says_so(tiny_dataset, settings, monkeypatch):
    from classifier.serving import calibrate as calibration

    def broken(*args, **kwargs):
        raise calibration.CalibrationError("no photos today")

    monkeypatch.setattr(calibration, "calibrate_run_dir", broken)
    run = queued_run(tiny_dataset)
    assert run_services.run_execute(run_id=run.pk) == Status.SUCCEEDED
    run.refresh_from_db()
    assert run.result["calibration"] == {"error": "CalibrationError: no photos today"}
    assert not (Path(settings.RUNS_ROOT) / run.out_dir / "calibration.json").exists()
    assert ModelVersion.objects.filter(run=run).exists()


def test_a_cancel_requested_mid_run_ends_it_cancelled_with_a_checkpoint(tiny_dataset, settings, monkeypatch):
    from classifier.runs.reporter import DbReporter

    run = queued_run(tiny_dataset, config={"head_epochs": 3, "finetune_epochs": 3})
    original = DbReporter.on_epoch_end

    def cancel_after_first_epoch(self, *, phase, epoch, metrics):
        original(self, phase=phase, epoch=epoch, metrics=metrics)
        TrainingRun.objects.filter(pk=self.run_id).update(cancel_requested=True)
        self._last_check = float("-inf")  # the flag is read at the next batch (not up to 0.5 s later)

    monkeypatch.setattr(DbReporter, "on_epoch_end", cancel_after_first_epoch)
    assert run_services.run_execute(run_id=run.pk) == Status.CANCELLED
    run.refresh_from_db()
    assert run.status == Status.CANCELLED and "cancelled" in run.error
    assert run.epochs.count() == 1
    assert (Path(settings.RUNS_ROOT) / run.out_dir / "checkpoint" / "last.json").is_file()
    assert not ModelVersion.objects.filter(run=run).exists()


def test_a_missing_dataset_folder_fails_with_the_reason_and_the_traceback(make_dataset, tiny_weights):
    dataset = make_dataset(path="nowhere/v1", split={"train": ["beagle/a.jpg"], "val": ["beagle/b.jpg"]})
    run = queued_run(dataset)
    assert run_services.run_execute(run_id=run.pk) == Status.FAILED
    run.refresh_from_db()
    assert run.status == Status.FAILED and "nowhere" in run.error
    assert "Traceback" in run.traceback


# ---- execute: failure paths with a stand-in for training -------------------------------------------
class FakeResult:
    def __init__(self, out_dir):
        from training import checkpoint as ckpt

        self.metrics = {"val_acc": 0.5, "best_val_acc": 0.6}
        self.class_names = ["a", "b"]
        self.skipped = []
        ckpt.atomic_write_json(Path(out_dir) / "meta.json", {"backbone": "cifar10_resnet20", "class_names": self.class_names,
                                                            "metrics": self.metrics})


def test_cuda_out_of_memory_retries_once_with_half_the_batch_size(make_dataset, monkeypatch):
    import torch

    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}), config={"batch_size": 32})
    sizes = []

    def fake_finetune(config, *, out_dir, reporter, resume):
        sizes.append(config.batch_size)
        if len(sizes) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return FakeResult(out_dir)

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    assert run_services.run_execute(run_id=run.pk) == Status.SUCCEEDED
    run.refresh_from_db()
    assert sizes == [32, 16] and run.config["batch_size"] == 16
    assert any("retried with 16" in note for note in run.result["notes"])


def test_cuda_out_of_memory_twice_fails_with_a_clear_message(make_dataset, monkeypatch):
    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}), config={"batch_size": 32})

    def fake_finetune(config, *, out_dir, reporter, resume):
        raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    assert run_services.run_execute(run_id=run.pk) == Status.FAILED
    run.refresh_from_db()
    assert "ran out of memory with batch size 16 (already halved once)" in run.error
    assert "CUDA out of memory" in run.traceback


def test_a_non_finite_loss_fails_the_run_with_that_reason(make_dataset, monkeypatch):
    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}))

    def fake_finetune(config, *, out_dir, reporter, resume):
        raise NonFiniteLoss("The training loss became nan at step 3; lower the learning rate (now 10).")

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    assert run_services.run_execute(run_id=run.pk) == Status.FAILED
    run.refresh_from_db()
    assert run.error.startswith("Non-finite loss: The training loss became nan") and "NonFiniteLoss" in run.traceback


def test_an_unexpected_error_is_kept_with_its_traceback(make_dataset, monkeypatch):
    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}))

    def fake_finetune(config, *, out_dir, reporter, resume):
        raise KeyError("boom")

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    assert run_services.run_execute(run_id=run.pk) == Status.FAILED
    run.refresh_from_db()
    assert run.error == "KeyError: 'boom'" and 'raise KeyError("boom")' in run.traceback


def test_a_worker_that_lost_its_run_to_the_reaper_stops_without_overwriting_it(make_dataset, monkeypatch):
    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}))

    def fake_finetune(config, *, out_dir, reporter, resume):
        # Meanwhile the reaper re-queued the run and a second attempt claimed it.
        TrainingRun.objects.filter(pk=run.pk).update(attempts=2)
        if reporter.should_stop():
            raise Cancelled("The run was cancelled.")
        return FakeResult(out_dir)

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    assert run_services.run_execute(run_id=run.pk) is None
    run.refresh_from_db()
    assert run.status == Status.RUNNING and run.attempts == 2 and run.error == ""


def test_a_resumed_attempt_passes_resume_and_keeps_the_epochs_already_recorded(make_dataset, monkeypatch, settings):
    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}), attempts=1)
    EpochMetric.objects.create(run=run, phase="head", epoch=1, val_acc=0.5)
    checkpoint = Path(settings.RUNS_ROOT) / run.out_dir / "checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "last.json").write_text("{}")
    seen = {}

    def fake_finetune(config, *, out_dir, reporter, resume):
        seen["resume"] = resume
        return FakeResult(out_dir)

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    assert run_services.run_execute(run_id=run.pk) == Status.SUCCEEDED
    run.refresh_from_db()
    assert seen == {"resume": True} and run.attempts == 2 and run.epochs.count() == 1
    assert any("resumed" in note for note in run.result["notes"])


# ---- cancel -------------------------------------------------------------------------------------------
def test_cancelling_a_queued_run_ends_it_at_once(make_run):
    run = run_services.run_cancel(run=make_run())
    assert run.status == Status.CANCELLED and run.finished_at is not None
    assert run_services.run_claim(run_id=run.pk, worker="w") is None  # its task finds nothing to do


def test_cancelling_a_running_run_only_raises_the_flag(make_run):
    run = run_services.run_cancel(run=make_run(status=Status.RUNNING, attempts=1))
    assert run.status == Status.RUNNING and run.cancel_requested


def test_cancelling_a_finished_run_is_refused(make_run):
    with pytest.raises(run_services.RunError, match="already ended"):
        run_services.run_cancel(run=make_run(status=Status.SUCCEEDED))


# ---- reaper ---------------------------------------------------------------------------------------------
def _stale(make_run, attempts, **fields):
    long_ago = timezone.now() - timedelta(hours=1)
    fields.setdefault("heartbeat_at", long_ago)
    return make_run(status=Status.RUNNING, started_at=long_ago, attempts=attempts, worker="w1@host", **fields)


def test_the_reaper_requeues_a_stale_run_below_the_attempt_limit(
    make_run, enqueued, settings, django_capture_on_commit_callbacks
):
    settings.BREEDLAB_MAX_RUN_ATTEMPTS = 2
    stale = _stale(make_run, attempts=1)
    alive = _stale(make_run, attempts=1, heartbeat_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.run_reap_stale(timeout_seconds=60) == [stale.pk]
    stale.refresh_from_db()
    assert stale.status == Status.QUEUED and stale.worker == "" and "re-queued" in stale.progress_detail["note"]
    assert [call["args"] for call in enqueued] == [[stale.pk]]
    alive.refresh_from_db()
    assert alive.status == Status.RUNNING


def test_the_reaper_fails_a_stale_run_that_used_up_its_attempts(make_run, enqueued, settings):
    settings.BREEDLAB_MAX_RUN_ATTEMPTS = 2
    stale = _stale(make_run, attempts=2)
    assert reaper.run_reap_stale(timeout_seconds=60) == [stale.pk]
    stale.refresh_from_db()
    assert stale.status == Status.FAILED and stale.error.startswith("Worker lost")
    assert enqueued == []


def test_a_starting_worker_reaps_the_runs_it_held_whatever_their_heartbeat(make_run, enqueued, settings):
    settings.BREEDLAB_MAX_RUN_ATTEMPTS = 1
    mine = _stale(make_run, attempts=1, heartbeat_at=timezone.now())
    other = _stale(make_run, attempts=1, heartbeat_at=timezone.now(), )
    TrainingRun.objects.filter(pk=other.pk).update(worker="w2@host")
    assert reaper.run_reap_stale(lost_worker="w1@host") == [mine.pk]
    assert TrainingRun.objects.get(pk=other.pk).status == Status.RUNNING


def test_the_soft_time_limit_fails_the_run_with_that_reason(make_dataset, monkeypatch):
    from celery.exceptions import SoftTimeLimitExceeded

    run = queued_run(make_dataset(split={"train": ["a"], "val": ["b"]}))

    def fake_finetune(config, *, out_dir, reporter, resume):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(run_services, "finetune", fake_finetune)
    assert run_services.run_execute(run_id=run.pk) == Status.FAILED
    run.refresh_from_db()
    assert run.error == "The run exceeded its time limit and was stopped." and "SoftTimeLimitExceeded" in run.traceback


# ---- resume -------------------------------------------------------------------------------------------
def _with_checkpoint(settings, run) -> TrainingRun:
    run.out_dir = f"run-{run.pk}"
    run.save()
    folder = Path(settings.RUNS_ROOT) / run.out_dir / "checkpoint"
    folder.mkdir(parents=True)
    (folder / "last.json").write_text("{}")
    return run


def test_a_cancelled_run_with_a_checkpoint_is_queued_again_to_resume(
    make_run, settings, enqueued, django_capture_on_commit_callbacks
):
    run = _with_checkpoint(settings, make_run(status=Status.CANCELLED, attempts=1, cancel_requested=True, error="x"))
    assert run_services.run_resumable(run)
    with django_capture_on_commit_callbacks(execute=True):
        run = run_services.run_resume(run=run)
    assert run.status == Status.QUEUED and not run.cancel_requested and run.error == "" and run.finished_at is None
    assert [call["args"] for call in enqueued] == [[run.pk]]
    claimed = run_services.run_claim(run_id=run.pk, worker="w")
    assert claimed.attempts == 2  # run_execute resumes: attempt > 1 and the checkpoint exists


def test_a_run_without_a_checkpoint_or_still_running_cannot_be_resumed(make_run, settings):
    no_checkpoint = make_run(status=Status.FAILED, out_dir="run-x")
    assert not run_services.run_resumable(no_checkpoint)
    with pytest.raises(run_services.RunError, match="cannot be resumed"):
        run_services.run_resume(run=no_checkpoint)
    running = _with_checkpoint(settings, make_run(status=Status.RUNNING, attempts=1))
    assert not run_services.run_resumable(running)
