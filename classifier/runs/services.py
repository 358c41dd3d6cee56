"""Writes for training runs: create, enqueue, claim, execute, cancel (the reaper: runs/reaper.py).

State machine (``TrainingRun.Status``)::

    queued --claim--> running --> succeeded | failed | cancelled
      |                  |
      +--cancel--> cancelled   +--reaper (worker lost)--> queued (resume) | failed
      |                                                  | cancelled (a cancel was requested)
      +--reaper (message lost: queued too long)--> sent to the broker again

Every transition out of "running" is a conditional UPDATE on (id, status, attempts): a worker
that lost its run to the reaper can no longer write to it, and a second delivery of the same
task finds nothing to claim.

Writes go through these functions. Imports classifier.datasets.selectors, classifier.models,
classifier.runs.config, classifier.runs.reporter, classifier.serving.calibrate, classifier.storage.remote,
classifier.versions.services, training.checkpoint, training.errors, training.finetune (besides
Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

import gc
import logging
import threading
import traceback
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext as _

from classifier.datasets.selectors import dataset_blocking_reason, dataset_folder
from classifier.models import Dataset, EpochMetric, TrainingRun
from classifier.runs import config as runconfig
from classifier.runs.reporter import DbReporter
from classifier.serving import calibrate as serving_calibrate
from classifier.storage import remote
from classifier.versions import services as versions
from training.checkpoint import CHECKPOINT_DIR, atomic_write_json
from training.errors import Cancelled, NonFiniteLoss, TrainingError
from training.finetune import finetune

log = logging.getLogger(__name__)

SPLIT_FILE = "split.json"
Status = TrainingRun.Status


class RunError(Exception):
    """A request about a run that cannot be honoured; the message is shown to the user."""


# ---------------------------------------------------------------------------------------------
# Creating and enqueueing
# ---------------------------------------------------------------------------------------------
def run_create(
    *,
    dataset: Dataset,
    config: dict[str, Any],
    created_by=None,
    promote_when_done: bool = False,
) -> TrainingRun:
    """Validate, create a queued run and enqueue it once the transaction commits.

    Raises RunError when the dataset cannot be trained on and runconfig.RunConfigError for an
    invalid configuration.
    """
    reason = dataset_blocking_reason(dataset)
    if reason:
        raise RunError(reason)
    full = runconfig.build_config(config)
    with transaction.atomic():
        run = TrainingRun.objects.create(
            dataset=dataset,
            config=full,
            created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
            promote_when_done=promote_when_done,
            status=Status.QUEUED,
            progress_detail={"stage": "queued"},
        )
        run.out_dir = f"run-{run.pk}"
        run.save(update_fields=["out_dir"])
        transaction.on_commit(lambda: run_enqueue(run_id=run.pk))
    log.info("run %s created on %s (%s, %s)", run.pk, dataset, full["backbone"], full["optimizer"])
    return run


def run_rerun(*, run: TrainingRun, created_by=None) -> TrainingRun:
    """A new run with the same dataset and configuration."""
    return run_create(
        dataset=run.dataset, config=dict(run.config), created_by=created_by, promote_when_done=run.promote_when_done
    )


def run_enqueue(*, run_id: int) -> None:
    """Send the run's task to the `training` queue with time limits from its configuration.

    When the broker cannot be reached the run fails with that reason instead of waiting forever.
    """
    from classifier.runs.tasks import execute_run

    run = TrainingRun.objects.select_related("dataset").get(pk=run_id)
    limit = runconfig.time_limit_seconds(run.config, image_count=run.dataset.image_count)
    try:
        execute_run.apply_async(args=[run.pk], soft_time_limit=limit, time_limit=limit + 120)
        TrainingRun.objects.filter(pk=run_id).update(enqueued_at=timezone.now())
    except Exception as exc:  # kombu raises several types for an unreachable broker
        log.exception("run %s: could not enqueue", run_id)
        TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
            status=Status.FAILED,
            finished_at=timezone.now(),
            error=_("The task queue could not be reached (%(error)s); start the run again.") % {
                "error": f"{type(exc).__name__}: {exc}"},
            traceback=traceback.format_exc(),
        )


# ---------------------------------------------------------------------------------------------
# Cancelling
# ---------------------------------------------------------------------------------------------
def run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Cancel cooperatively: a queued run ends at once, a running one at its next batch."""
    now = timezone.now()
    if TrainingRun.objects.filter(pk=run.pk, status=Status.QUEUED).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now, progress_detail={"stage": "cancelled"}
    ):
        log.info("run %s cancelled while queued", run.pk)
    elif TrainingRun.objects.filter(pk=run.pk, status=Status.RUNNING).update(cancel_requested=True):
        log.info("run %s: cancel requested", run.pk)
    else:
        run.refresh_from_db()
        raise RunError(_("Run #%(id)s has already ended (%(status)s).") % {"id": run.pk, "status": run.get_status_display()})
    run.refresh_from_db()
    return run


def run_resumable(run: TrainingRun) -> bool:
    """A cancelled or failed run whose last epoch checkpoint is on disk can go on from there."""
    if run.status not in (Status.CANCELLED, Status.FAILED) or not run.out_dir:
        return False
    if remote.enabled():  # the bucket's manifest decides: any worker resumes from it
        return f"{CHECKPOINT_DIR}/last.json" in (remote.published_files(remote.RUNS, run.out_dir) or {})
    return (Path(settings.RUNS_ROOT) / run.out_dir / CHECKPOINT_DIR / "last.json").is_file()


def run_resume(*, run: TrainingRun) -> TrainingRun:
    """cancelled | failed -> queued: the worker claims it as a further attempt and resumes from
    the last saved epoch (``run_execute`` resumes whenever a checkpoint exists on attempt > 1)."""
    if not run_resumable(run):
        raise RunError(_("Run #%(id)s cannot be resumed: it has no saved epoch to go on from.") % {"id": run.pk})
    updated = TrainingRun.objects.filter(pk=run.pk, status__in=(Status.CANCELLED, Status.FAILED)).update(
        status=Status.QUEUED, cancel_requested=False, finished_at=None, heartbeat_at=None, worker="",
        error="", traceback="", progress_detail={"stage": "queued", "resumed": True},
    )
    if updated != 1:
        run.refresh_from_db()
        raise RunError(_("Run #%(id)s cannot be resumed: it is %(status)s.") % {"id": run.pk, "status": run.get_status_display()})
    transaction.on_commit(lambda: run_enqueue(run_id=run.pk))
    run.refresh_from_db()
    return run


# ---------------------------------------------------------------------------------------------
# The worker side
# ---------------------------------------------------------------------------------------------
def run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    """queued -> running, atomically. None when someone else has it or it is no longer queued."""
    now = timezone.now()
    updated = TrainingRun.objects.filter(pk=run_id, status=Status.QUEUED).update(
        status=Status.RUNNING,
        attempts=F("attempts") + 1,
        worker=worker[:200],
        started_at=Coalesce(F("started_at"), now),
        heartbeat_at=now,
        finished_at=None,
    )
    if updated != 1:
        return None
    return TrainingRun.objects.select_related("dataset").get(pk=run_id)


class _Heartbeat(threading.Thread):
    """Beats every ``interval`` seconds while the main thread trains (even inside a long batch)."""

    def __init__(self, reporter: DbReporter, interval: float) -> None:
        super().__init__(name=f"heartbeat-run-{reporter.run_id}", daemon=True)
        self.reporter = reporter
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.wait(self.interval):
                try:
                    self.reporter.beat()
                except Exception:  # a database hiccup must not end the heartbeats: the run would look dead
                    log.exception("run %s: heartbeat not written; closing the connection and retrying", self.reporter.run_id)
                    try:
                        connection.close()
                    except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                        log.debug("closing the broken connection failed", exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def _is_cuda_oom(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "CUDA out of memory" in str(exc)


def _owned(run_id: int, attempt: int):
    return TrainingRun.objects.filter(pk=run_id, status=Status.RUNNING, attempts=attempt)


def _finish(run_id: int, attempt: int, status: str, *, error: str = "", tb: str = "", **fields: Any) -> bool:
    updated = _owned(run_id, attempt).update(
        status=status, finished_at=timezone.now(), heartbeat_at=timezone.now(), error=error, traceback=tb, **fields
    )
    if updated != 1:
        log.warning("run %s: attempt %s no longer owns the run; %s not recorded", run_id, attempt, status)
    return updated == 1


def _write_split(run: TrainingRun, out_dir: Path) -> Path:
    split = run.dataset.split or {}
    path = out_dir / SPLIT_FILE
    atomic_write_json(path, {part: list(split.get(part, [])) for part in ("train", "val", "test")})
    return path


def run_execute(*, run_id: int, worker: str = "") -> str | None:
    """Claim the run and train it. Returns the final status, or None when there was nothing to claim.

    Every outcome lands on the row: succeeded (with a ModelVersion), cancelled, or failed with
    the reason and the traceback. CUDA out-of-memory retries once with half the batch size.
    """
    run = run_claim(run_id=run_id, worker=worker)
    if run is None:
        log.info("run %s: nothing to claim (not queued)", run_id)
        return None
    attempt = run.attempts
    out_dir = Path(settings.RUNS_ROOT) / run.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    if attempt > 1:
        remote.run_local(run.out_dir, fresh=True)  # object storage: the last checkpoint any worker published
    resume = attempt > 1 and (out_dir / CHECKPOINT_DIR / "last.json").is_file()
    if not resume:
        EpochMetric.objects.filter(run_id=run_id).delete()  # leftovers of an attempt that never checkpointed
    config = dict(run.config)
    reporter = DbReporter(run_id=run_id, attempt=attempt, config=config,
                          on_checkpoint=(lambda: remote.publish(remote.RUNS, run.out_dir)) if remote.enabled() else None)
    reporter.start(resumed=resume)
    heartbeat = _Heartbeat(reporter, interval=max(0.5, min(30.0, settings.BREEDLAB_HEARTBEAT_TIMEOUT / 4)))
    heartbeat.start()
    notes: list[str] = list((run.result or {}).get("notes", []))
    if resume:
        notes.append(f"Attempt {attempt} resumed from the last saved epoch after the worker was lost.")
    try:
        split_file = _write_split(run, out_dir)
        data_dir = dataset_folder(run.dataset)  # with object storage: downloaded once into this host's cache
        oom_retried = False
        while True:
            try:
                tc = runconfig.train_config(config, data_dir=data_dir, split_file=split_file)
                result = finetune(tc, out_dir=out_dir, reporter=reporter, resume=resume)
                break
            except Exception as exc:
                if not _is_cuda_oom(exc):
                    raise
                if oom_retried or config["batch_size"] <= 1:
                    raise TrainingError(
                        f"CUDA ran out of memory with batch size {config['batch_size']}"
                        f"{' (already halved once)' if oom_retried else ''}; choose a smaller batch size or image size."
                    ) from exc
                import torch

                old = config["batch_size"]
                config["batch_size"] = max(1, old // 2)
                notes.append(f"CUDA ran out of memory with batch size {old}; retried with {config['batch_size']}.")
                log.warning("run %s: CUDA OOM at batch size %s, retrying with %s", run_id, old, config["batch_size"])
                _owned(run_id, attempt).update(config=config, result={"notes": notes})
                EpochMetric.objects.filter(run_id=run_id).delete()
                oom_retried, resume = True, False
                del exc
                gc.collect()
                torch.cuda.empty_cache()
                reporter.start(resumed=False)
        if reporter.lost or not _owned(run_id, attempt).exists():
            # The reaper gave the run to another attempt meanwhile: write nothing more (no calibration files).
            log.warning("run %s: attempt %s lost the run before its final writes; nothing recorded", run_id, attempt)
            return None
        calibration = _calibrate(run_id, attempt, out_dir, detail=reporter.stage_detail("calibrate"))
        remote.publish(remote.RUNS, run.out_dir, final=True)  # the model version's files, before its row
    except Cancelled as exc:
        if reporter.lost:
            return None
        _finish(run_id, attempt, Status.CANCELLED, error=str(exc), progress_detail={"stage": "cancelled"},
                result={"notes": notes})
        return Status.CANCELLED
    except SoftTimeLimitExceeded:
        _finish(run_id, attempt, Status.FAILED, error=_("The run exceeded its time limit and was stopped."),
                tb=traceback.format_exc(), progress_detail={"stage": "failed"}, result={"notes": notes})
        return Status.FAILED
    except NonFiniteLoss as exc:
        _finish(run_id, attempt, Status.FAILED, error=_("Non-finite loss: %(error)s") % {"error": exc}, tb=traceback.format_exc(),
                progress_detail={"stage": "failed"}, result={"notes": notes})
        return Status.FAILED
    except Exception as exc:
        message = str(exc) if isinstance(exc, TrainingError) else f"{type(exc).__name__}: {exc}"
        log.exception("run %s failed", run_id)
        _finish(run_id, attempt, Status.FAILED, error=message, tb=traceback.format_exc(),
                progress_detail={"stage": "failed"}, result={"notes": notes})
        return Status.FAILED
    finally:
        heartbeat.stop()
    return _succeed(run_id, attempt, result, config=config, notes=notes, calibration=calibration)


# A run's not-a-dog thresholds: the dog-mass quantile is taken over at most this many photos of
# its breeds (evenly spread over the dataset; 500 give 15 photos below a 3% quantile).
CALIBRATION_MAX_PHOTOS = 500


def _calibrate(run_id: int, attempt: int, out_dir: Path, *, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Choose the run's own "not a dog" / "not sure" thresholds (classifier.serving.calibrate)
    while the heartbeat still beats. Best effort: when it fails, the version serves with the
    default thresholds and the run's result says why."""
    import torch

    _owned(run_id, attempt).update(progress_detail=detail or {"stage": "calibrate"})
    try:
        report = serving_calibrate.calibrate_run_dir(
            out_dir, max_dog_mass_photos=CALIBRATION_MAX_PHOTOS, threads=max(1, torch.get_num_threads())
        )
        serving_calibrate.calibration_save(report=report, run_dir=out_dir)
    except Exception as exc:  # noqa: BLE001 - the model itself is fine; it serves with the defaults
        log.warning("run %s: calibration failed, default thresholds serve: %s", run_id, exc)
        return {"error": f"{type(exc).__name__}: {exc}"}
    validation = report["validation"]
    return {
        "thresholds": report["thresholds"],
        "target_false_reject": report["target_false_reject"],
        "validation": {k: validation.get(k) for k in ("n", "not_dog_rate", "not_sure_rate", "top1_when_named")},
        "int8": report.get("int8"),  # measured as the version is registered (classifier.serving.int8)
    }


def _succeed(
    run_id: int, attempt: int, result, *, config: dict[str, Any], notes: list[str], calibration: dict[str, Any]
) -> str | None:
    metrics = {k: v for k, v in result.metrics.items()}
    outcome: dict[str, Any] = {
        "metrics": metrics,
        "plan": getattr(result, "plan", None),
        "class_names": list(result.class_names),
        "skipped": [list(s) for s in result.skipped],
        "notes": notes,
        "calibration": calibration,
    }
    with transaction.atomic():
        if not _finish(
            # The accuracy of the weights the run keeps (early stopping may restore an epoch other
            # than the one with the highest accuracy), so the list shows what the model serves.
            run_id, attempt, Status.SUCCEEDED, progress=1.0, best_val_acc=float(metrics.get("val_acc") or 0.0),
            result=outcome, config=config, progress_detail={"stage": "done"},
        ):
            return None
        run = TrainingRun.objects.select_related("dataset").get(pk=run_id)
        version = versions.model_register_from_run(run=run)
    if run.promote_when_done:
        try:
            promoted, reason = versions.model_promote_if_better(version=version)
        except Exception as exc:  # the run succeeded; a failed comparison must not hide that
            log.exception("run %s: promotion check failed", run_id)
            promoted, reason = False, f"The comparison with the active model failed: {exc}"
        outcome["promotion"] = {"promoted": promoted, "reason": reason}
        TrainingRun.objects.filter(pk=run_id, status=Status.SUCCEEDED, attempts=attempt).update(result=outcome)
    return Status.SUCCEEDED
