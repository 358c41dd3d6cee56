"""Reads about storage: sizes on disk of datasets, runs and model versions, and pending deletions.

With object storage (BREEDLAB_STORAGE_URL=s3://...) an item's size is what its objects take in the
bucket (listed, not estimated), which is what the purge frees there; the local folders are caches.

Imports classifier.datasets.storage (cache folders), classifier.models, classifier.storage.remote (besides Django and libraries).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.utils.translation import gettext as _

from classifier.datasets.storage import cache_dir
from classifier.models import Dataset, ModelVersion, TrainingRun
from classifier.storage import remote

KINDS = ("run", "dataset", "model")


def folder_bytes(path: Path | None) -> int:
    """Bytes of the regular files under ``path`` (links are not followed; a missing folder is 0)."""
    if path is None or not path.exists():
        return 0
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _inside(root: Path, relative: str) -> Path | None:
    rel = PurePosixPath(relative or "")
    if not relative or rel.is_absolute() or ".." in rel.parts or str(rel) in ("", "."):
        return None
    return Path(root) / rel


def run_folder(run: TrainingRun) -> Path | None:
    return _inside(Path(settings.RUNS_ROOT), run.out_dir)


def dataset_folder(dataset: Dataset) -> Path | None:
    return _inside(Path(settings.DATASETS_ROOT), dataset.path)


def model_folder(version: ModelVersion) -> Path | None:
    """The folder a version owns: an imported one's. A run's version shares its run's folder
    (removed with the run) and the built-in one has none."""
    if version.is_builtin or version.run_id is not None or not version.path.startswith("imported/"):
        return None
    return _inside(Path(settings.RUNS_ROOT), version.path)


def item_folder(obj) -> Path | None:
    if isinstance(obj, TrainingRun):
        return run_folder(obj)
    if isinstance(obj, Dataset):
        return dataset_folder(obj)
    return model_folder(obj)


def export_files(version_ids) -> list[Path]:
    """Archives built for these model versions' downloads (versions.services.model_export's cache)."""
    folder = Path(settings.BREEDLAB_SERVING_CACHE_DIR) / "exports"
    return [p for pk in version_ids for p in sorted(folder.glob(f"model-{int(pk)}-*.zip"))]


def item_paths(obj) -> list[Path]:
    """Everything deleting ``obj`` removes: its folder, a dataset's cached thumbnails, and the cached
    export archives of its model version(s)."""
    folder = item_folder(obj)
    if isinstance(obj, TrainingRun):
        versions = ModelVersion.objects.filter(run=obj).values_list("pk", flat=True)
    elif isinstance(obj, ModelVersion):
        versions = [obj.pk]
    else:
        versions = []
    derived = [cache_dir(obj)] if isinstance(obj, Dataset) else []  # thumbnails and charts
    return ([folder] if folder is not None else []) + derived + export_files(versions)


def item_remote(obj) -> tuple[str, str] | None:
    """``(kind, folder)`` of the item's objects in the bucket, or None (files are local, or it owns no folder)."""
    if not remote.enabled() or item_folder(obj) is None:
        return None
    if isinstance(obj, TrainingRun):
        return remote.RUNS, obj.out_dir
    if isinstance(obj, Dataset):
        return remote.DATASETS, obj.path
    return remote.RUNS, obj.path


def item_bytes(obj) -> int:
    """Bytes deleting ``obj`` frees: its folder (in the bucket with object storage) and its export archives."""
    where = item_remote(obj)
    paths = item_paths(obj)
    if where is None:
        return sum(folder_bytes(p) for p in paths)
    folder = item_folder(obj)
    return (remote.stored_bytes(*where) or 0) + sum(folder_bytes(p) for p in paths if p != folder)


def purge_after(deleted_at: datetime) -> datetime:
    return deleted_at + timedelta(hours=settings.BREEDLAB_DELETE_GRACE_HOURS)


def deletion_blocker(obj) -> str | None:
    """Why ``obj`` cannot be deleted now, or None."""
    if isinstance(obj, TrainingRun):
        version = ModelVersion.objects.filter(run=obj).first()
        if version is not None and version.is_active:
            return _("Its model serves now; promote another model first.")
        if obj.status in (TrainingRun.Status.QUEUED, TrainingRun.Status.RUNNING):
            return _("It is still queued or running; cancel it first.")
        return None
    if isinstance(obj, Dataset):
        if obj.status == Dataset.Status.IMPORTING:
            return _("It is still being imported.")
        used = list(TrainingRun.objects.filter(dataset=obj, deleted_at__isnull=True).values_list("pk", flat=True)[:5])
        if used:
            return _("Runs use it: %(runs)s. Delete them first.") % {"runs": ", ".join(f"#{pk}" for pk in used)}
        return None
    if obj.is_builtin:
        return _("The built-in model cannot be deleted.")
    if obj.is_active:
        return _("It serves now; promote another model first.")
    return None


@dataclass
class Item:
    kind: str
    obj: object
    label: str
    bytes: int
    deleted_at: datetime | None
    purge_after: datetime | None
    blocked: str  # why it cannot be deleted now ("" when it can)


def _label(kind: str, obj) -> str:
    if kind == "run":
        return f"#{obj.pk} · {obj.dataset.name} v{obj.dataset.version} · {obj.get_status_display()}"
    if kind == "dataset":
        return f"{obj.name} v{obj.version}"
    return str(obj.display_name)


def storage_items() -> dict[str, list[Item]]:
    """Every dataset version, run and model version with its size and whether it may be deleted."""
    out: dict[str, list[Item]] = {}
    rows = {
        "dataset": Dataset.objects.order_by("name", "-version"),
        "run": TrainingRun.objects.select_related("dataset").order_by("-id"),
        "model": ModelVersion.objects.order_by("-id"),
    }
    for kind in ("dataset", "run", "model"):
        items = []
        for obj in rows[kind]:
            deleted = obj.deleted_at
            items.append(Item(kind, obj, _label(kind, obj), item_bytes(obj), deleted,
                              purge_after(deleted) if deleted else None, "" if deleted else (deletion_blocker(obj) or "")))
        out[kind] = sorted(items, key=lambda i: -i.bytes)
    return out


def storage_roots() -> list[tuple[str, Path, int]]:
    """The storage roots and how much each holds."""
    roots = [("datasets", Path(settings.DATASETS_ROOT)), ("runs", Path(settings.RUNS_ROOT)), ("media", Path(settings.MEDIA_ROOT)),
             ("serving cache", Path(settings.BREEDLAB_SERVING_CACHE_DIR))]
    found = [(name, path, folder_bytes(path)) for name, path in roots]
    if remote.enabled():  # the local folders are this host's caches; the bucket holds the files
        url = settings.BREEDLAB_STORAGE_URL.rstrip("/")
        found += [(f"bucket: {kind}", f"{url}/{kind}/", size) for kind, size in remote.bucket_bytes().items()]
    return found
