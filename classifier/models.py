"""Breedlab's rows: datasets, training runs and their metrics, model versions, predictions.

Imports classifier.web.names (display names) and nothing else of classifier/ or training/.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from classifier.web.names import version_display_name


class Dataset(models.Model):
    """An ImageFolder-layout collection of photos, one folder per class, stored under DATASETS_ROOT.

    A dataset used by a run is never changed in place: changes make a new version (a new row
    with the same name and ``version + 1`` pointing at its ``parent``).
    """

    class Status(models.TextChoices):
        IMPORTING = "importing", _("importing")
        READY = "ready", _("ready")
        FAILED = "failed", _("failed")

    name = models.CharField(_("name"), max_length=100)
    version = models.PositiveIntegerField(_("version"), default=1)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children", verbose_name=_("parent")
    )
    description = models.TextField(_("description"), blank=True)
    path = models.CharField(_("folder"), max_length=500, help_text=_("Relative to the datasets storage root."))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.IMPORTING)
    classes = models.JSONField(_("classes"), default=list, blank=True)
    image_count = models.PositiveIntegerField(_("images"), default=0)
    report = models.JSONField(_("validation report"), default=dict, blank=True)
    split = models.JSONField(_("train/validation split"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("created by")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    deleted_at = models.DateTimeField(
        _("deleted"), null=True, blank=True, db_index=True,
        help_text=_("Set when staff delete it; its files are removed after the grace period."),
    )

    class Meta:
        ordering = ["name", "-version"]
        verbose_name = _("dataset")
        verbose_name_plural = _("datasets")
        constraints = [models.UniqueConstraint(fields=["name", "version"], name="dataset_name_version_unique")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def get_absolute_url(self) -> str:
        return reverse("classifier:dataset_detail", args=[self.pk])

    @property
    def problems(self) -> list[str]:
        """Reasons that make training on this dataset pointless (empty when it is usable)."""
        return list(self.report.get("problems", []))

    @property
    def class_count(self) -> int:
        return len(self.classes)


class TrainingRun(models.Model):
    """One fine-tuning job: its configuration, its state machine and its outcome."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("queued")
        RUNNING = "running", _("running")
        SUCCEEDED = "succeeded", _("succeeded")
        FAILED = "failed", _("failed")
        CANCELLED = "cancelled", _("cancelled")

    FINAL_STATES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
    ACTIVE_STATES = frozenset({Status.QUEUED, Status.RUNNING})

    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="runs", verbose_name=_("dataset"))
    config = models.JSONField(_("configuration"), default=dict)
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("started by")
    )
    created_at = models.DateTimeField(_("created"), auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(_("started"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("heartbeat"), null=True, blank=True)
    enqueued_at = models.DateTimeField(_("sent to the queue"), null=True, blank=True)
    progress = models.FloatField(_("progress"), default=0.0, help_text=_("From 0 to 1."))
    progress_detail = models.JSONField(_("progress detail"), default=dict, blank=True)
    cancel_requested = models.BooleanField(_("cancel requested"), default=False)
    promote_when_done = models.BooleanField(_("promote when done if better"), default=False)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    out_dir = models.CharField(_("output folder"), max_length=500, blank=True)
    best_val_acc = models.FloatField(_("best validation accuracy"), null=True, blank=True)
    result = models.JSONField(_("result"), default=dict, blank=True)
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    deleted_at = models.DateTimeField(
        _("deleted"), null=True, blank=True, db_index=True,
        help_text=_("Set when staff delete it; its files are removed after the grace period."),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("training run")
        verbose_name_plural = _("training runs")

    def __str__(self) -> str:
        return f"Run #{self.pk} ({self.get_status_display()})"

    def get_absolute_url(self) -> str:
        return reverse("classifier:run_detail", args=[self.pk])

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATES

    @property
    def backbone(self) -> str:
        """The network the run uses: the one its results name or, while it runs, its plan names (what an
        ``auto`` run chose), else its config's."""
        metrics = (self.result or {}).get("metrics") or {}
        plan = (self.progress_detail or {}).get("plan") or {}
        return str(metrics.get("backbone") or plan.get("backbone") or self.config.get("backbone", ""))

    @property
    def image_size(self) -> int | None:
        """The input size the run uses, as its results or its plan name it (None before the plan)."""
        metrics = (self.result or {}).get("metrics") or {}
        plan = (self.progress_detail or {}).get("plan") or {}
        return metrics.get("image_size") or plan.get("image_size")

    @property
    def backbone_auto(self) -> bool:
        """The configuration left the network to the run (``backbone`` "auto", training.backbones.AUTO_BACKBONE)."""
        return self.config.get("backbone") == "auto"

    @property
    def optimizer(self) -> str:
        return str(self.config.get("optimizer", ""))

    @property
    def duration(self):
        if self.started_at is None:
            return None
        from django.utils import timezone

        return (self.finished_at or timezone.now()) - self.started_at


class EpochMetric(models.Model):
    """Metrics of one epoch of one phase ("head" or "finetune") of a run."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="epochs", verbose_name=_("run"))
    phase = models.CharField(_("phase"), max_length=16)
    epoch = models.PositiveIntegerField(_("epoch"))
    train_loss = models.FloatField(_("train loss"), null=True, blank=True)
    train_acc = models.FloatField(_("train accuracy"), null=True, blank=True)
    val_loss = models.FloatField(_("validation loss"), null=True, blank=True)
    val_acc = models.FloatField(_("validation accuracy"), null=True, blank=True)
    lr = models.FloatField(_("learning rate"), null=True, blank=True)
    seconds = models.FloatField(_("seconds"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        ordering = ["run", "id"]
        verbose_name = _("epoch metric")
        verbose_name_plural = _("epoch metrics")
        constraints = [
            models.UniqueConstraint(fields=["run", "phase", "epoch"], name="epochmetric_run_phase_epoch_unique")
        ]

    def __str__(self) -> str:
        return f"{self.run_id} {self.phase} #{self.epoch}"


class ModelVersion(models.Model):
    """A servable model: the files a run produced, or the built-in one (the pretrained network's
    own 118 ImageNet dog classes, no files). At most one is active (a database constraint)."""

    class Kind(models.TextChoices):
        FINE_TUNED = "fine_tuned", _("fine-tuned")
        BUILTIN = "builtin", _("built-in (pretrained)")

    BUILTIN_NAME = "Pretrained: 118 dog breeds (ImageNet)"

    run = models.OneToOneField(
        TrainingRun, null=True, blank=True, on_delete=models.SET_NULL, related_name="model_version", verbose_name=_("run")
    )
    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.FINE_TUNED)
    backbone = models.CharField(_("backbone"), max_length=100)
    path = models.CharField(
        _("folder"), max_length=500, blank=True, help_text=_("Relative to the runs storage root (empty for the built-in model).")
    )
    class_names = models.JSONField(_("classes"), default=list)
    metrics = models.JSONField(_("metrics"), default=dict, blank=True)
    is_active = models.BooleanField(_("active"), default=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    promoted_at = models.DateTimeField(_("promoted"), null=True, blank=True)
    promoted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("promoted by"),
    )
    deleted_at = models.DateTimeField(
        _("deleted"), null=True, blank=True, db_index=True,
        help_text=_("Set when staff delete it; its files are removed after the grace period."),
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("model version")
        verbose_name_plural = _("model versions")
        constraints = [
            models.UniqueConstraint(fields=["is_active"], condition=Q(is_active=True), name="modelversion_one_active"),
            models.UniqueConstraint(fields=["kind"], condition=Q(kind="builtin"), name="modelversion_one_builtin"),
        ]

    def __str__(self) -> str:
        return str(self.display_name)

    @property
    def is_builtin(self) -> bool:
        return self.kind == self.Kind.BUILTIN

    @property
    def display_name(self) -> str:
        """The name shown to people: the built-in model's in the reader's language."""
        if self.is_builtin:
            return str(_("Pretrained: 118 dog breeds (ImageNet)"))
        return version_display_name(self.name)

    @property
    def val_acc(self) -> float | None:
        value = self.metrics.get("val_acc")
        return float(value) if value is not None else None


class Prediction(models.Model):
    """One classification request: the photo, which model answered, and what it said."""

    created_at = models.DateTimeField(_("time"), auto_now_add=True, db_index=True)
    image = models.ImageField(_("photo"), upload_to="predictions/%Y/%m/", blank=True)
    image_sha256 = models.CharField(_("photo SHA-256"), max_length=64, blank=True)
    original_name = models.CharField(_("uploaded file name"), max_length=255, blank=True)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions", verbose_name=_("model")
    )
    is_dog = models.BooleanField(_("is a dog"), null=True)
    top_label = models.CharField(_("answer"), max_length=200, blank=True)
    top_score = models.FloatField(_("confidence"), null=True, blank=True)
    result = models.JSONField(_("result"), default=dict, blank=True)
    elapsed_ms = models.FloatField(_("time taken (ms)"), null=True, blank=True)
    source = models.CharField(_("source"), max_length=16, default="web")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("user")
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("prediction")
        verbose_name_plural = _("predictions")

    def __str__(self) -> str:
        return f"{self.top_label or '—'} ({self.created_at:%Y-%m-%d %H:%M})"


class Feedback(models.Model):
    """A user's correction: "this is not a X, it is a Y". Staff can merge corrections into a dataset."""

    # "None of the model's breeds, or not a dog at all": kept for review, never merged into a class.
    OTHER_LABEL = "__other__"

    prediction = models.ForeignKey(
        Prediction, on_delete=models.CASCADE, related_name="feedback", verbose_name=_("prediction")
    )
    correct_label = models.CharField(_("correct breed"), max_length=200)
    created_at = models.DateTimeField(_("time"), auto_now_add=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, verbose_name=_("user")
    )
    merged_into = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", verbose_name=_("merged into")
    )

    class Review(models.TextChoices):
        PENDING = "pending", _("waiting for review")
        ACCEPTED = "accepted", _("accepted")
        REJECTED = "rejected", _("rejected")

    # Only corrections staff accepted (having seen the photo) are merged into datasets.
    review = models.CharField(_("review"), max_length=16, choices=Review.choices, default=Review.PENDING, db_index=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        verbose_name=_("reviewed by"),
    )
    reviewed_at = models.DateTimeField(_("reviewed"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("correction")
        verbose_name_plural = _("corrections")
        constraints = [
            # One correction per prediction: a later one replaces it (serving/services.feedback_create).
            models.UniqueConstraint(fields=["prediction"], name="one_correction_per_prediction"),
        ]

    def __str__(self) -> str:
        return f"{self.prediction_id} → {self.correct_label}"
