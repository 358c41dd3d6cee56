"""Writes for storage: soft-delete a run, a dataset version or a model version, restore one, and
purge (remove files, then rows) what was deleted longer ago than the grace period.

A deletion only stamps ``deleted_at``: the item leaves the lists and cannot be used, and its files
stay until the periodic purge (``classifier.tasks.purge_deleted``, celery beat) runs after
``BREEDLAB_DELETE_GRACE_HOURS``. Refused: the active model's run, a queued or running run, a dataset
version a (not deleted) run uses or that is still importing, the active or the built-in model version.

Imports classifier.datasets.storage, classifier.models, classifier.storage.remote, classifier.storage.selectors (besides Django and libraries).
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime

from django.db import transaction
from django.db.models import ProtectedError
from django.utils import timezone
from django.utils.translation import gettext as _

from classifier.datasets.storage import remove_folder
from classifier.models import Dataset, ModelVersion, TrainingRun
from classifier.storage import remote
from classifier.storage.selectors import (
    deletion_blocker,
    folder_bytes,
    item_bytes,
    item_folder,
    item_paths,
    item_remote,
    purge_after,
)

log = logging.getLogger(__name__)


class StorageError(Exception):
    """A deletion or restore that cannot be done; the message is shown to the user."""


def item_delete(*, obj, user=None) -> int:
    """Soft-delete ``obj``; returns the bytes its files take (freed when the purge runs)."""
    with transaction.atomic():
        obj = type(obj).objects.select_for_update().get(pk=obj.pk)
        if obj.deleted_at is not None:
            raise StorageError(_("It is already deleted."))
        blocker = deletion_blocker(obj)
        if blocker:
            raise StorageError(blocker)
        now = timezone.now()
        type(obj).objects.filter(pk=obj.pk).update(deleted_at=now)
        if isinstance(obj, TrainingRun):  # its model version goes with it (the files are the run's)
            ModelVersion.objects.filter(run=obj, deleted_at__isnull=True).update(deleted_at=now)
    size = item_bytes(obj)
    log.info("%s %s deleted by %s (%d bytes, purged after %s)", type(obj).__name__, obj.pk, getattr(user, "pk", None), size,
             purge_after(now))
    return size


def item_restore(*, obj) -> None:
    if obj.deleted_at is None:
        raise StorageError(_("It is not deleted."))
    if isinstance(obj, TrainingRun) and obj.dataset.deleted_at is not None:
        raise StorageError(_("Its dataset version is deleted; restore that first."))
    with transaction.atomic():
        type(obj).objects.filter(pk=obj.pk).update(deleted_at=None)
        if isinstance(obj, TrainingRun):
            ModelVersion.objects.filter(run=obj, deleted_at=obj.deleted_at).update(deleted_at=None)


def _remove(obj) -> int:
    """Remove the item's files; returns the bytes freed (with object storage: the bucket's objects,
    then this host's cached copy, which is not counted)."""
    where = item_remote(obj)
    folder = item_folder(obj)
    size = remote.remove(*where) if where is not None else 0
    for path in item_paths(obj):
        if where is None or path != folder:
            size += folder_bytes(path)
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif isinstance(obj, Dataset) and path == folder:
            remove_folder(path)  # and its name's folder when that is left empty
        elif path.exists():
            shutil.rmtree(path)
    return size


def purge_deleted(*, now: datetime | None = None) -> dict[str, int]:
    """Remove the files, then the rows, of everything deleted before the grace period; returns
    how many items of each kind went and the bytes freed."""
    from datetime import timedelta

    from django.conf import settings

    cutoff = (now or timezone.now()) - timedelta(hours=settings.BREEDLAB_DELETE_GRACE_HOURS)
    done = {"run": 0, "model": 0, "dataset": 0, "bytes": 0}
    for version in ModelVersion.objects.filter(deleted_at__lte=cutoff, is_active=False):
        done["bytes"] += _remove(version)
        version.delete()
        done["model"] += 1
    for run in TrainingRun.objects.filter(deleted_at__lte=cutoff):
        done["bytes"] += _remove(run)
        ModelVersion.objects.filter(run=run, is_active=False).delete()
        run.delete()
        done["run"] += 1
    for dataset in Dataset.objects.filter(deleted_at__lte=cutoff):
        if TrainingRun.objects.filter(dataset=dataset).exists():
            continue  # a run deleted later still refers to it: next time
        done["bytes"] += _remove(dataset)
        try:
            dataset.delete()
        except ProtectedError:
            continue
        done["dataset"] += 1
    if any(done.values()):
        log.info("purged deleted items: %s", done)
    return done
