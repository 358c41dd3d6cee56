"""Writes of the serving room: predictions and their corrections.

``prediction_create`` validates every uploaded photo first (nothing is stored when one is
bad), classifies them in one batch with the active model (or, where allowed, the pretrained
model alone), then stores one Prediction row per photo with its photo (as uploaded when it is a
plain JPEG, otherwise a clean re-encoded copy). The API records after its answer has been sent
(``record_when_sent``): the row and the photo file are not on the client's clock.
``feedback_create`` records a "Wrong breed?" correction (one per prediction: a later one replaces
it), ``feedback_review`` is staff accepting or rejecting corrections; only accepted ones are merged
into datasets (datasets/services.py).
``prediction_purge_anonymous`` removes anonymous visitors' photos after the retention period.
Calibrating a model's not-a-dog thresholds is serving/calibrate.py (the rule: serving/calibration.py).

Imports serving's other rooms, classifier.models and training/.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from classifier.models import Feedback, Prediction
from classifier.serving import cache as inference
from classifier.serving import imaging, ratelimit
from classifier.serving.calibration import (
    DOG,
    NOT_DOG,
    NOT_SURE,
    Thresholds,
)
from classifier.serving.imaging import DecodedImage, ImageRejected

log = logging.getLogger(__name__)

MAX_TOP_K = 20
API_VERDICTS = {DOG: "dog", NOT_SURE: "not_sure", NOT_DOG: "not_a_dog"}  # the page's three answers


class ServerBusy(Exception):
    """Every prediction slot of this process stayed taken for BREEDLAB_PREDICT_WAIT_SECONDS."""


# At most BREEDLAB_MAX_CONCURRENT_PREDICTIONS predictions decode, classify and store at once in
# one process: decoded photos are the process's largest allocations, so this bounds its memory.
_slots: threading.BoundedSemaphore | None = None
_slots_size = 0
_slots_lock = threading.Lock()


def prediction_slots() -> threading.BoundedSemaphore:
    global _slots, _slots_size
    size = settings.BREEDLAB_MAX_CONCURRENT_PREDICTIONS
    with _slots_lock:
        if _slots is None or _slots_size != size:
            _slots, _slots_size = threading.BoundedSemaphore(size), size
        return _slots


class FeedbackError(Exception):
    """A correction that cannot be recorded; the message is shown to the user."""


@dataclass
class Answer:
    """One photo's answer, as the page and the API show it."""

    prediction: Prediction
    model: dict[str, Any] | None  # {"id", "name", "backbone"}; None: the pretrained model alone answered
    verdict: str  # "dog" | "not_dog" | "not_sure"
    is_dog: bool
    predictions: list[dict[str, Any]]  # fine-tuned top-k [{"label", "score"}]
    base_predictions: list[dict[str, Any]]  # pretrained model's own classes
    elapsed_ms: float
    dog_mass: float | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    photo: Any = None  # the ContentFile to store with the row, until it is recorded

    def as_api(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "verdict": API_VERDICTS[self.verdict],
            "thresholds": self.thresholds,
            "dog_mass": None if self.dog_mass is None else round(self.dog_mass, 6),
            "is_dog": self.is_dog,
            "predictions": self.predictions,
            "base_predictions": self.base_predictions,
            "elapsed_ms": round(self.elapsed_ms, 2),
        }


def _top(probs: np.ndarray, names: Sequence[str], k: int) -> list[dict[str, Any]]:
    k = min(k, len(names))
    order = np.argsort(-probs, kind="stable")[:k]
    return [{"label": names[int(i)], "score": round(float(probs[int(i)]), 6)} for i in order]


def decode_uploads(uploads: Sequence[UploadedFile]) -> list[DecodedImage]:
    """Validate and decode every upload; the first bad one raises ImageRejected naming it."""
    decoded = []
    for i, upload in enumerate(uploads):
        try:
            decoded.append(imaging.open_upload(upload))
        except ImageRejected as exc:
            if len(uploads) > 1:
                exc.message = _("Photo %(n)s of %(total)s: %(why)s") % {"n": i + 1, "total": len(uploads), "why": exc.message}
            raise
    return decoded


def prediction_create(
    *,
    uploads: Sequence[UploadedFile],
    user=None,
    source: str = "web",
    top_k: int = 5,
    allow_base_only: bool = False,
    record: bool = True,
    active_hint: bytes | None = None,
) -> list[Answer]:
    """Classify the uploaded photos and store a Prediction per photo.

    Raises ImageRejected (400/413) when any photo is bad and ModelUnavailable when no fine-tuned
    model can answer and ``allow_base_only`` is False; nothing is stored in either case. Raises
    ServerBusy when this process's prediction slots stay taken for BREEDLAB_PREDICT_WAIT_SECONDS.
    ``record=False``: the rows are not written yet; the caller records them (``prediction_record``
    or ``record_when_sent``). The photos to store are prepared here either way, inside the slot, so
    no decoded photo outlives it. ``active_hint``: see ``cache.get_active``.
    """
    if not uploads:
        raise ImageRejected(_("Choose a photo to classify."))
    slots = prediction_slots()
    if not slots.acquire(timeout=settings.BREEDLAB_PREDICT_WAIT_SECONDS):
        raise ServerBusy(_("The server is busy classifying other photos; try again in a minute."))
    try:
        answers = _predict(uploads, user=user, source=source, top_k=top_k, allow_base_only=allow_base_only,
                           active_hint=active_hint)
    finally:
        slots.release()
    if record:
        prediction_record(answers)
    return answers


def _predict(uploads, *, user, source: str, top_k: int, allow_base_only: bool, active_hint: bytes | None) -> list[Answer]:
    started = time.perf_counter()
    top_k = max(1, min(int(top_k), MAX_TOP_K))
    decoded = decode_uploads(uploads)
    images = [d.image for d in decoded]
    decode_s = time.perf_counter() - started

    loaded: inference.Loaded | None = None
    try:
        loaded = inference.get_active(active_hint)
        model, thresholds = loaded.model, loaded.thresholds
    except inference.ModelUnavailable:
        if not allow_base_only:
            raise
        model, thresholds = inference.get_base(), inference.base_thresholds()
    classify_started = time.perf_counter()  # a model loaded by this request is not the photo's time
    outputs = model.classify(images)
    del images
    elapsed_ms = (decode_s + time.perf_counter() - classify_started) * 1000.0

    answers = []
    for i, item in enumerate(decoded):
        answer = _answer(item, i, outputs, model, thresholds, loaded, top_k, elapsed_ms)
        answer.prediction.user = user if getattr(user, "is_authenticated", False) else None
        answer.prediction.source = source
        answer.photo = imaging.stored_file(item.image, item.plain_jpeg)
        answers.append(answer)
    return answers


def _answer(item, i, outputs, model, thresholds: Thresholds, loaded, top_k: int, elapsed_ms: float) -> Answer:
    fine = outputs.fine[i] if outputs.fine is not None else None
    base = outputs.base[i] if outputs.base is not None else None
    dog_mass = float(model.dog_mass(base[None])[0]) if base is not None else None
    confidence = float(fine.max()) if fine is not None else None
    verdict = thresholds.verdict(dog_mass=dog_mass, confidence=confidence)
    predictions = _top(fine, model.class_names, top_k) if fine is not None else []
    base_predictions = _top(base, model.base_class_names, top_k) if base is not None else []
    model_info = (
        {"id": loaded.version_id, "name": loaded.name, "backbone": loaded.backbone, "builtin": loaded.builtin}
        if loaded
        else None
    )
    used = {"dog_mass": thresholds.dog_mass, "confidence": thresholds.confidence, "source": thresholds.source}
    prediction = Prediction(
        image_sha256=item.sha256,
        original_name=item.original_name,
        model_version_id=loaded.version_id if loaded else None,
        is_dog=verdict != NOT_DOG,
        top_label=predictions[0]["label"] if predictions and verdict == DOG else "",
        top_score=predictions[0]["score"] if predictions else None,
        elapsed_ms=elapsed_ms,
        result={
            "verdict": verdict,
            "predictions": predictions,
            "base_predictions": base_predictions,
            "dog_mass": dog_mass,
            "confidence": confidence,
            "thresholds": used,
            "builtin": bool(loaded and loaded.builtin),
            "engine": model.engine,
            "backbone": model.backbone,
            "model_name": loaded.name if loaded else None,
            "class_names": list(model.class_names or []),
        },
    )
    return Answer(
        prediction=prediction,
        model=model_info,
        verdict=verdict,
        is_dog=verdict != NOT_DOG,
        predictions=predictions,
        base_predictions=base_predictions,
        elapsed_ms=elapsed_ms,
        dog_mass=dog_mass,
        thresholds=used,
    )


def prediction_record(answers: list[Answer]) -> None:
    """Save the photos and the rows; on any failure remove the photos already written and raise.

    One photo's row is one INSERT (autocommit); several photos' rows share a transaction."""
    saved = []
    try:
        with transaction.atomic() if len(answers) > 1 else contextlib.nullcontext():
            for answer in answers:
                p = answer.prediction
                p.image.save(answer.photo.name, answer.photo, save=False)
                saved.append(p.image.name)
                p.save()
                answer.photo = None
    except BaseException:
        for name in saved:
            try:
                Prediction._meta.get_field("image").storage.delete(name)
            except OSError:
                log.warning("could not remove %s after a failed prediction", name)
        raise


def record_when_sent(response, answers: list[Answer]):
    """Record ``answers`` once ``response`` has been sent (the WSGI server closes it after writing).
    The client already has its answer then: a failure is logged with the photos' SHA-256, never raised."""

    def record() -> None:
        try:
            prediction_record(answers)
        except Exception:  # noqa: BLE001 - the answer is out; this is the log of it
            log.exception("the prediction of %s was answered but could not be recorded",
                          ", ".join(a.prediction.image_sha256[:12] for a in answers))

    return ratelimit.when_sent(response, record)


def feedback_create(*, prediction: Prediction, correct_label: str, user=None) -> Feedback:
    """Record "this photo shows ``correct_label``"; the label must be a class of the model that answered."""
    label = (correct_label or "").strip()
    known = list(prediction.result.get("class_names") or [])
    if not known and prediction.model_version is not None:
        known = list(prediction.model_version.class_names)
    if not label:
        raise FeedbackError(_("Choose the right breed."))
    if label not in known and label != Feedback.OTHER_LABEL:
        raise FeedbackError(_("“%(label)s” is not a breed this model knows.") % {"label": label[:100]})
    if not prediction.image:
        raise FeedbackError(_("This prediction has no stored photo to correct."))
    with transaction.atomic():
        existing = Feedback.objects.select_for_update().filter(prediction=prediction).first()
        if existing is not None and existing.merged_into_id is not None:
            raise FeedbackError(_("This photo's correction is already part of a dataset."))
        # One correction per prediction: a later one replaces the earlier and waits for review again.
        feedback, _created = Feedback.objects.update_or_create(
            prediction=prediction,
            defaults={
                "correct_label": label,
                "user": user if getattr(user, "is_authenticated", False) else None,
                "review": Feedback.Review.PENDING,
                "reviewed_by": None,
                "reviewed_at": None,
            },
        )
    return feedback


def feedback_review(*, feedback_ids, accept: bool, reviewer) -> int:
    """Staff accept (mergeable into datasets) or reject corrections; returns how many changed.
    Corrections already merged keep their state."""
    state = Feedback.Review.ACCEPTED if accept else Feedback.Review.REJECTED
    return Feedback.objects.filter(pk__in=list(feedback_ids), merged_into__isnull=True).update(
        review=state, reviewed_by=reviewer, reviewed_at=timezone.now()
    )


# ---------------------------------------------------------------------------------------------
# Retention: anonymous visitors' photos are not kept for ever
# ---------------------------------------------------------------------------------------------
def prediction_purge_anonymous(*, older_than_days: int | None = None, batch: int = 500) -> int:
    """Delete anonymous predictions (no user) older than BREEDLAB_ANONYMOUS_RETENTION_DAYS, their
    stored photos first; returns how many rows went. Corrections of them go too (cascade)."""
    from datetime import timedelta

    days = settings.BREEDLAB_ANONYMOUS_RETENTION_DAYS if older_than_days is None else older_than_days
    cutoff = timezone.now() - timedelta(days=days)
    storage = Prediction._meta.get_field("image").storage
    removed = 0
    while True:
        rows = list(Prediction.objects.filter(user__isnull=True, created_at__lt=cutoff).values_list("pk", "image")[:batch])
        if not rows:
            return removed
        for _pk, name in rows:
            if name:
                try:
                    storage.delete(name)
                except OSError:
                    log.warning("could not remove the photo %s of an expired prediction", name)
        Prediction.objects.filter(pk__in=[pk for pk, _name in rows]).delete()
        removed += len(rows)
