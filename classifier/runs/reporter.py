"""``DbReporter``: training's reporter protocol (training.reporting.Reporter) writing database rows.

- batch progress, throttled to one write per ``interval`` seconds, with an ETA;
- one EpochMetric row per (run, phase, epoch), update_or_create so a resumed run never
  duplicates an epoch;
- a heartbeat with every write (and from ``beat()``, which the worker's heartbeat thread calls);
- ``should_stop()`` reads ``cancel_requested`` (at most every ``interval / 2`` seconds);
- ``progress_detail["stages"]``: every stage so far in order (whatever ``on_progress`` names, e.g.
  "decode" and "features", then each training phase from ``on_phase_start``, then "calibrate"),
  each with its own done/total and an ETA from that stage's own rate, so the page can show each
  stage's progress. A new stage is written at once; progress within a stage is throttled.

Every write is conditional on the run still being "running" under this attempt: a worker whose
run was taken away by the reaper stops at its next batch instead of overwriting the new attempt.

Imports classifier.models (besides Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from classifier.models import EpochMetric, TrainingRun

METRIC_FIELDS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class DbReporter:
    def __init__(
        self,
        *,
        run_id: int,
        attempt: int,
        config: dict[str, Any],
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_checkpoint: Callable[[], object] | None = None,
    ) -> None:
        self.run_id = run_id
        # Called when an epoch's checkpoint is committed (before the epoch's row): object storage
        # gets the run folder (classifier.storage.remote.publish), so another worker can resume.
        self.on_checkpoint = on_checkpoint
        self.attempt = attempt
        self.epochs = {"head": int(config.get("head_epochs") or 0), "finetune": int(config.get("finetune_epochs") or 0)}
        self.interval = interval
        self.clock = clock
        self.lost = False
        self.batches = 0
        self._last_write = -math.inf
        self._last_check = -math.inf
        self._cancel = False
        self._rate_start: tuple[float, int] | None = None
        self.stages: list[dict[str, Any]] = []
        self._stage_rate: dict[str, tuple[float, int]] = {}
        self.plan: dict[str, Any] | None = None

    # ---- writing -------------------------------------------------------------------------
    def _owned(self):
        return TrainingRun.objects.filter(pk=self.run_id, status=TrainingRun.Status.RUNNING, attempts=self.attempt)

    def _write(self, **fields: Any) -> None:
        if "progress_detail" in fields and self.plan is not None:
            fields["progress_detail"] = {**fields["progress_detail"], "plan": self.plan, "eta_total_seconds": self._eta_total()}
        updated = self._owned().update(heartbeat_at=timezone.now(), **fields)
        if updated != 1:
            self.lost = True
        self._last_write = self.clock()

    def _due(self) -> bool:
        return self.clock() - self._last_write >= self.interval

    def beat(self) -> None:
        """Only the heartbeat (the worker's heartbeat thread calls this)."""
        if self._owned().update(heartbeat_at=timezone.now()) != 1:
            self.lost = True

    def start(self, *, resumed: bool) -> None:
        self._rate_start = None
        self.stages, self._stage_rate = [], {}
        self._write(progress_detail={"stage": "starting", "resumed": resumed, "stages": []})

    # ---- stages --------------------------------------------------------------------------
    def _stage(self, name: str, done: int, total: int) -> bool:
        """Record ``name``'s progress; True when it is a new stage (earlier ones are then finished)."""
        now = self.clock()
        current = next((s for s in self.stages if s["name"] == name), None)
        new = current is None
        if new:
            for earlier in self.stages:
                earlier["finished"] = True
                earlier["eta_seconds"] = None
                if earlier["total"]:
                    earlier["done"] = earlier["total"]
            current = {"name": name, "done": 0, "total": 0, "eta_seconds": None, "finished": False}
            self.stages.append(current)
            self._stage_rate[name] = (now, int(done))
        current["done"], current["total"] = int(done), int(total)
        t0, d0 = self._stage_rate[name]
        eta = None
        if total and done > d0 and now > t0:
            eta = round((now - t0) / (done - d0) * max(0, total - done), 1)
        current["eta_seconds"] = eta
        return new

    def stage_detail(self, name: str) -> dict[str, Any]:
        """The progress_detail for a stage the worker runs itself (e.g. "calibrate")."""
        self._stage(name, 0, 0)
        return {"stage": name, "stages": [dict(s) for s in self.stages]}

    def _eta_total(self) -> float | None:
        """Seconds left for the whole run: the current stage's own ETA (or its planned time when it
        has none yet) plus the planned seconds of every stage not started."""
        if not self.plan:
            return None
        estimates: dict[str, float] = dict(self.plan.get("estimates") or {})
        started = {s["name"] for s in self.stages}
        left = 0.0
        for stage in self.stages:
            if stage.get("finished"):
                continue
            if stage.get("eta_seconds") is not None:
                left += float(stage["eta_seconds"])
            elif stage["name"] in estimates:
                left += float(estimates[stage["name"]])
        left += sum(float(v) for k, v in estimates.items() if k not in started and k != "decode")
        return round(left, 1)

    def on_plan(self, *, plan: dict[str, Any]) -> None:
        """The run's plan (views, epochs, seconds per stage); kept in every later progress write."""
        self.plan = dict(plan)
        self.epochs["finetune"] = int(plan.get("finetune_epochs") or self.epochs["finetune"])
        self._write(progress_detail={"stage": "plan", "stages": [dict(s) for s in self.stages]})

    # ---- progress arithmetic -------------------------------------------------------------
    def _total_steps(self) -> int:
        return max(1, (self.epochs["head"] + self.epochs["finetune"]) * max(self.batches, 1))

    def _step(self, phase: str, epoch: int, batch: int) -> int:
        offset = self.epochs["head"] * self.batches if phase == "finetune" else 0
        return offset + (epoch - 1) * self.batches + batch

    def _eta(self, step: int) -> float | None:
        now = self.clock()
        if self._rate_start is None:
            self._rate_start = (now, step)
            return None
        t0, s0 = self._rate_start
        if step <= s0:
            return None
        return (now - t0) / (step - s0) * max(0, self._total_steps() - step)

    # ---- the Reporter protocol -----------------------------------------------------------
    def on_progress(self, *, what: str, done: int, total: int) -> None:
        new = self._stage(what, done, total)
        if new or done >= total or self._due():
            self._write(progress_detail={"stage": what, "done": int(done), "total": int(total),
                                         "stages": [dict(s) for s in self.stages]})

    def on_phase_start(self, *, phase: str, epochs: int, batches_per_epoch: int) -> None:
        self.epochs[phase] = int(epochs)
        self.batches = int(batches_per_epoch)
        self._stage(phase, 0, int(epochs) * self.batches)
        self._write(
            progress_detail={"stage": "train", "phase": phase, "epoch": 0, "epochs": int(epochs), "batch": 0,
                             "batches": self.batches, "stages": [dict(s) for s in self.stages]}
        )

    def on_batch(self, *, phase: str, epoch: int, batch: int, batches: int, loss: float) -> None:
        self.batches = int(batches)
        step = self._step(phase, epoch, batch)
        eta = self._eta(step)
        epochs = self.epochs.get(phase, 0)
        self._stage(phase, (int(epoch) - 1) * self.batches + int(batch), max(epochs, int(epoch)) * self.batches)
        if not (batch == batches or self._due()):
            return
        self._write(
            progress=min(0.99, step / self._total_steps()),
            progress_detail={
                "stage": "train",
                "phase": phase,
                "epoch": int(epoch),
                "epochs": self.epochs.get(phase, 0),
                "batch": int(batch),
                "batches": int(batches),
                "loss": _finite(loss),
                "eta_seconds": None if eta is None else round(eta, 1),
                "stages": [dict(s) for s in self.stages],
            },
        )

    def on_epoch_end(self, *, phase: str, epoch: int, metrics: dict[str, Any]) -> None:
        if self.on_checkpoint is not None and not self.lost and self._owned().exists():
            self.on_checkpoint()  # training saved the epoch's checkpoint just before calling this
        values = {name: _finite(metrics.get(name)) for name in METRIC_FIELDS}
        with transaction.atomic():
            if self._owned().exists():
                EpochMetric.objects.update_or_create(run_id=self.run_id, phase=phase, epoch=epoch, defaults=values)
            val_acc = values["val_acc"]
            fields: dict[str, Any] = {}
            if val_acc is not None:
                fields["best_val_acc"] = Case(
                    When(best_val_acc__gte=val_acc, then=F("best_val_acc")), default=Value(val_acc)
                )
            step = self._step(phase, epoch, self.batches)
            self._write(progress=min(0.99, step / self._total_steps()), **fields)

    def should_stop(self) -> bool:
        if self.lost or self._cancel:
            return True
        now = self.clock()
        if now - self._last_check >= self.interval / 2:
            self._last_check = now
            row = TrainingRun.objects.filter(pk=self.run_id).values_list("cancel_requested", "status", "attempts").first()
            if row is None or row[1] != TrainingRun.Status.RUNNING or row[2] != self.attempt:
                self.lost = True
            elif row[0]:
                self._cancel = True
        return self.lost or self._cancel
