"""The import pipeline every dataset write shares: reserve a row and a folder name, fill the
folder, check it (report.py), split it, and mark the row ready or failed.

Used by datasets/services.py only; imports datasets' report, selectors and storage, and
classifier.models.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils.text import slugify
from django.utils.translation import gettext as _

from classifier.datasets import selectors
from classifier.datasets.archives import ArchiveError
from classifier.datasets.report import build_report
from classifier.datasets.storage import DatasetError, remove_folder
from classifier.models import Dataset
from classifier.storage import remote
from training.objectstore import StorageError
from training.splits import DEFAULT_TEST_FRACTION, duplicate_groups, file_fingerprint
from training.splits import split_files as training_split_files

log = logging.getLogger(__name__)

MIN_SIDE = 64


MIN_IMAGES_PER_CLASS = 5


def import_into(
    *,
    name: str,
    fill: Callable[[Path], tuple[list[dict], dict]],
    created_by,
    description: str,
    seed: int,
    val_fraction: float,
    parent: Dataset | None = None,
    inherit_split: dict | None = None,
) -> Dataset:
    """Reserve a row and folder, fill the folder, then report and split; or fail cleanly."""
    name = name.strip()
    dataset = reserve(name=name, parent=parent, created_by=created_by, description=description)
    folder = selectors.dataset_folder(dataset)
    done = False
    try:
        extra_skipped, source = fill(folder)
        finish(dataset, folder, extra_skipped, source, seed=seed, val_fraction=val_fraction, inherit=inherit_split)
        done = True
        return dataset
    except (ArchiveError, DatasetError) as exc:
        message = str(exc)
    except OSError as exc:
        log.exception("dataset %s: import failed", dataset.pk)
        message = _("The files could not be written: %(error)s") % {"error": exc.strerror or exc}
    except StorageError as exc:
        log.exception("dataset %s: upload to object storage failed", dataset.pk)
        message = _("The photos could not be uploaded to object storage: %(error)s") % {"error": exc}
    except Exception as exc:
        log.exception("dataset %s: import failed", dataset.pk)
        message = _("The import failed unexpectedly (%(error)s).") % {"error": type(exc).__name__}
    finally:
        if not done:
            remove_folder(folder)
    Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.FAILED, error=message)
    dataset.refresh_from_db()
    raise DatasetError(message, dataset=dataset)


def reserve(*, name: str, parent: Dataset | None, created_by, description: str) -> Dataset:
    """A new ``importing`` row with the next version number of ``name`` and an unused folder."""
    root = Path(settings.DATASETS_ROOT)
    for _attempt in range(5):
        versions = Dataset.objects.filter(name=name)
        latest_version = versions.aggregate(latest=Max("version"))["latest"] or 0
        previous = versions.order_by("-version").first()
        prefix = PurePosixPath(previous.path).parent.as_posix() if previous else new_prefix(name)
        version = latest_version + 1
        path = f"{prefix}/v{version}"
        if (root / path).exists():  # a leftover from a crash: never reuse or overwrite it
            path = f"{prefix}/v{version}-{secrets.token_hex(3)}"
        if parent is None:
            parent = versions.filter(status=Dataset.Status.READY).order_by("-version").first()
        try:
            with transaction.atomic():
                return Dataset.objects.create(
                    name=name,
                    version=version,
                    parent=parent,
                    path=path,
                    status=Dataset.Status.IMPORTING,
                    description=description,
                    created_by=created_by,
                )
        except IntegrityError:  # someone else took this version number meanwhile
            continue
    raise DatasetError(_("Could not reserve a new version of %(name)s; try again.") % {"name": name})


def new_prefix(name: str) -> str:
    root = Path(settings.DATASETS_ROOT)
    slug = slugify(name)[:60].strip("-") or "dataset"
    candidate, number = slug, 1
    while (root / candidate).exists() or Dataset.objects.filter(path__startswith=f"{candidate}/").exists():
        number += 1
        candidate = f"{slug}-{number}"
    return candidate


def finish(
    dataset: Dataset,
    folder: Path,
    extra_skipped: list[dict],
    source: dict,
    *,
    seed: int,
    val_fraction: float,
    inherit: dict | None,
) -> None:
    report = build_report(folder, min_side=MIN_SIDE, min_images_per_class=MIN_IMAGES_PER_CLASS)
    usable: dict[str, list[str]] = report.pop("usable_files")
    report.pop("root", None)  # the server's path is nobody's business
    report["skipped"] = extra_skipped + report["skipped"]
    report["source"] = source
    split = split_files(usable, folder=folder, seed=seed, val_fraction=val_fraction, inherit=inherit)
    dataset.report = report
    dataset.classes = [item["name"] for item in report["classes"] if item["images"]]
    dataset.image_count = report["total_images"]
    dataset.split = split
    # With object storage: the files are in the bucket (manifest last) before anyone sees "ready".
    remote.publish(remote.DATASETS, dataset.path, final=True)
    dataset.status = Dataset.Status.READY
    dataset.error = ""
    dataset.save(update_fields=["report", "classes", "image_count", "split", "status", "error"])


def split_files(
    usable: dict[str, list[str]], *, folder: Path, seed: int, val_fraction: float, inherit: dict | None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict:
    """The one splitter (training.splits): train / val / test, seeded, stratified, with copies of a
    photo (same bytes or same perceptual hash) kept in one part; files already in ``inherit`` (the
    parent version's split) keep their part."""
    prints = {rel: file_fingerprint(folder / rel) for files in usable.values() for rel in files}
    parts = training_split_files(
        usable, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
        groups=duplicate_groups(prints), inherit=inherit,
    )
    return {**parts, "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
