"""Writes for datasets: import (archive, upload, server folder), new versions, merges, deletion.

Every dataset lives in its own folder ``DATASETS_ROOT/<slug-of-name>/v<version>/`` (an ImageFolder
root). Rules:

1. A row is created first with status ``importing`` and its folder reserved; the folder is filled
   in a staging folder next to it and moved into place with one rename; then ``build_report`` runs
   and the row becomes ``ready`` (with report, classes, image count and the seeded stratified
   split) or ``failed`` (with the error). A failed import leaves no folder behind.
2. A dataset's folder is never changed after it is ready. Any change (a re-upload under the same
   name, merged corrections) creates a new version: a new row and folder with ``parent`` set.
3. Nothing is written outside the dataset's own folder (and, for thumbnails and charts, a cache
   folder under MEDIA_ROOT that only the server reads).

Writes go through these functions. Imports classifier.datasets.archives,
classifier.datasets.importing, classifier.datasets.selectors, classifier.datasets.storage,
classifier.models, classifier.storage.services (soft deletion), training.data, training.files (besides Django and libraries); never another
domain's views or api.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone
from django.utils.translation import get_language, ngettext
from django.utils.translation import gettext as _

from classifier.datasets import selectors
from classifier.datasets.archives import ArchiveError, ArchiveLimits, extract_archive
from classifier.datasets.importing import (
    import_into,
)
from classifier.datasets.storage import (
    Addition,
    DatasetError,
    cache_dir,
    copy_tree,
    link_or_copy,
    remove_folder,
    upload_on_disk,
    write_addition,
)
from classifier.models import Dataset, Feedback
from classifier.storage import services as storage_services
from training.data import IMAGE_EXTENSIONS
from training.files import atomic_write
from training.splits import DEFAULT_VAL_FRACTION as TRAINING_DEFAULT_VAL_FRACTION

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = TRAINING_DEFAULT_VAL_FRACTION  # the CLI's too (training.splits)
MIN_VAL_FRACTION = 0.05
MAX_VAL_FRACTION = 0.5
THUMBNAIL_SIDE = 160


# 1. Imports ------------------------------------------------------------------------------------


def dataset_import_upload(
    *,
    name: str,
    upload: UploadedFile,
    created_by=None,
    description: str = "",
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    limits: ArchiveLimits | None = None,
) -> Dataset:
    """Import an uploaded archive. Django has already streamed a large upload to a temporary file;
    a small one (held in memory) is spooled to one here, in chunks."""
    _check_archive_size(upload.size, upload.name or "archive")
    with upload_on_disk(upload) as path:
        return dataset_import_archive(
            name=name,
            archive_path=path,
            source_name=upload.name,
            created_by=created_by,
            description=description,
            seed=seed,
            val_fraction=val_fraction,
            limits=limits,
        )


def dataset_import_archive(
    *,
    name: str,
    archive_path: Path,
    source_name: str | None = None,
    created_by=None,
    description: str = "",
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    limits: ArchiveLimits | None = None,
) -> Dataset:
    """Import a ZIP or tar archive in ImageFolder layout as a new dataset (or a new version of the
    dataset with this name). Raises DatasetError; when the archive itself is refused, the error is
    also kept on a ``failed`` row (``error.dataset``)."""
    archive_path = Path(archive_path)
    label = source_name or archive_path.name
    _check_options(name=name, seed=seed, val_fraction=val_fraction)
    _check_archive_size(archive_path.stat().st_size, label)

    def fill(folder: Path) -> tuple[list[dict], dict]:
        try:
            result = extract_archive(archive_path, folder, limits=limits or ArchiveLimits())
        except ArchiveError as exc:  # name the user's file, not the temporary file it was streamed to
            raise ArchiveError(str(exc).replace(archive_path.name, label)) from exc
        skipped = [{"path": entry, "reason": "archive", "detail": reason} for entry, reason in result.skipped]
        source = {
            "kind": "archive",
            "name": label,
            "format": result.format,
            "bytes": archive_path.stat().st_size,
            "unpacked_bytes": result.total_bytes,
            "stripped_root": result.stripped_root,
            "flattened": len(result.flattened),
        }
        return skipped, source

    return import_into(
        name=name, fill=fill, created_by=created_by, description=description, seed=seed, val_fraction=val_fraction
    )


def dataset_import_folder(
    *,
    name: str,
    source: Path,
    created_by=None,
    description: str = "",
    seed: int = DEFAULT_SEED,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    source_label: str | None = None,
) -> Dataset:
    """Copy a folder on the server (ImageFolder layout) into a new dataset. Regular files are copied;
    links, hidden files and files outside class folders are skipped and listed in the report."""
    source = Path(source)
    _check_options(name=name, seed=seed, val_fraction=val_fraction)
    if not source.is_dir():
        raise DatasetError(_("%(path)s is not a folder.") % {"path": source})
    root = Path(settings.DATASETS_ROOT).resolve()
    if root.is_relative_to(source.resolve()):
        raise DatasetError(_("%(path)s contains the datasets storage folder; choose a folder inside it.") % {"path": source})

    def fill(folder: Path) -> tuple[list[dict], dict]:
        skipped = copy_tree(source, folder)
        return skipped, {"kind": "folder", "name": source_label or str(source)}

    return import_into(
        name=name, fill=fill, created_by=created_by, description=description, seed=seed, val_fraction=val_fraction
    )


def dataset_new_version(
    *, parent: Dataset, additions: Iterable[Addition], created_by=None, description: str = ""
) -> Dataset:
    """A new version of ``parent``: its files (hard-linked where the disk allows, else copied) plus
    ``additions``. Files that were in the parent keep their train/val side; new files are split
    with the parent's seed and fraction. The parent's folder and row are not touched."""
    if parent.status != Dataset.Status.READY:
        raise DatasetError(_("Only a dataset that is ready can get a new version."))
    additions = list(additions)
    parent_folder = selectors.dataset_folder(parent)
    if not parent_folder.is_dir():
        raise DatasetError(_("The folder of %(dataset)s is missing on the server.") % {"dataset": parent})
    seed = int(parent.split.get("seed", DEFAULT_SEED))
    val_fraction = float(parent.split.get("val_fraction", DEFAULT_VAL_FRACTION))

    def fill(folder: Path) -> tuple[list[dict], dict]:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".copying", dir=folder.parent))
        try:
            out = staging / "out"
            shutil.copytree(parent_folder, out, symlinks=False, copy_function=link_or_copy)
            added = [write_addition(out, item) for item in additions]
            os.replace(out, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return [], {"kind": "version", "name": str(parent), "parent": parent.pk, "added": added}

    return import_into(
        name=parent.name,
        parent=parent,
        fill=fill,
        created_by=created_by,
        description=description or parent.description,
        seed=seed,
        val_fraction=val_fraction,
        inherit_split=parent.split,
    )


def dataset_merge_feedback(*, dataset: Dataset, created_by=None) -> Dataset:
    """Merge the unmerged corrections whose breed is one of ``dataset``'s classes into a new
    version of it, and mark them ``merged_into`` that version. The dataset itself is unchanged."""
    mergeable = selectors.dataset_feedback_mergeable(dataset)
    if not mergeable:
        raise DatasetError(_("There are no unmerged corrections for the classes of this dataset."))
    additions = []
    for feedback, class_name in mergeable:
        suffix = PurePosixPath(feedback.prediction.image.name).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS:
            suffix = ".jpg"
        additions.append(
            Addition(
                class_name=class_name,
                filename=f"correction-{feedback.pk}{suffix}",
                open=lambda image=feedback.prediction.image: image.open("rb"),
                origin=_("correction #%(id)s") % {"id": feedback.pk},
            )
        )
    description = ngettext(
        "%(parent)s with %(count)d merged correction.", "%(parent)s with %(count)d merged corrections.", len(additions)
    ) % {"parent": dataset, "count": len(additions)}
    version = dataset_new_version(parent=dataset, additions=additions, created_by=created_by, description=description)
    # Conditional: a correction merged meanwhile by someone else keeps its first merge.
    Feedback.objects.filter(pk__in=[item.pk for item, _class in mergeable], merged_into__isnull=True).update(
        merged_into=version
    )
    return version


def dataset_delete(*, dataset: Dataset, user=None) -> int:
    """Soft-delete a dataset version no run uses, like runs and model versions
    (classifier.storage.services.item_delete): it leaves the lists at once and can be restored;
    its folder (and objects in the bucket) and cached thumbnails go with the periodic purge after
    ``BREEDLAB_DELETE_GRACE_HOURS``. Returns the bytes that frees."""
    try:
        return storage_services.item_delete(obj=dataset, user=user)
    except storage_services.StorageError as exc:
        raise DatasetError(str(exc)) from None


# 2. Thumbnails and charts (cached, derived files) ----------------------------------------------


def dataset_reap_interrupted(*, now: datetime | None = None) -> list[int]:
    """Fail imports still ``importing`` after ``BREEDLAB_IMPORT_TIMEOUT`` seconds: the web process
    that ran them stopped (restart, crash, killed request) before it could finish or fail them.
    Their partial folders are removed. Returns the ids it failed."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.BREEDLAB_IMPORT_TIMEOUT)
    message = _("The import was interrupted: the process doing it stopped before it finished. Import the photos again.")
    reaped = []
    for dataset in Dataset.objects.filter(status=Dataset.Status.IMPORTING, created_at__lt=cutoff):
        # Conditional: an import that finishes (or fails) at this moment keeps its own outcome.
        if Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.IMPORTING).update(
            status=Dataset.Status.FAILED, error=message
        ):
            remove_folder(selectors.dataset_folder(dataset))
            reaped.append(dataset.pk)
    if reaped:
        log.warning("failed interrupted dataset imports %s", reaped)
    return reaped


def dataset_thumbnail(*, dataset: Dataset, path: Path, relpath: str) -> Path:
    """A small JPEG of one of the dataset's images, made once and cached under MEDIA_ROOT.

    ``path`` must come from ``selectors.dataset_file_path`` (the whitelisted file)."""
    from PIL import Image, ImageOps

    target = cache_dir(dataset) / "thumbs" / f"{hashlib.sha256(relpath.encode()).hexdigest()[:40]}.jpg"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as image:
        image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        image = ImageOps.exif_transpose(image)
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        atomic_write(target, lambda handle: image.save(handle, "JPEG", quality=82, optimize=True))
    return target


# Metadata that can say where and when a photo was taken, or by whom.
_PRIVATE_INFO = ("exif", "xmp", "XML:com.adobe.xmp", "comment", "Description", "Author", "Copyright")


def dataset_image_public(*, dataset: Dataset, path: Path, relpath: str) -> Path:
    """The file to serve for one of the dataset's images: the file itself when it carries no
    metadata, otherwise a copy without EXIF (GPS position, camera, time), XMP or comments, made
    once and cached under MEDIA_ROOT. The pixels are unchanged apart from the EXIF orientation,
    which is applied so the photo still shows the right way up."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        has_metadata = bool(image.getexif()) or any(key in image.info for key in _PRIVATE_INFO)
        if not has_metadata:
            return path
        fmt = image.format or "JPEG"
        target = cache_dir(dataset) / "clean" / f"{hashlib.sha256(relpath.encode()).hexdigest()[:40]}{path.suffix.lower()}"
        if target.is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        clean = ImageOps.exif_transpose(image)
        options = {"quality": 95} if fmt == "JPEG" else {}
        if fmt == "JPEG" and clean.mode not in ("RGB", "L"):
            clean = clean.convert("RGB")
        atomic_write(target, lambda handle: clean.save(handle, fmt, **options))  # no exif= / pnginfo=: none written
    return target


def dataset_chart(*, dataset: Dataset, narrow: bool = False) -> Path:
    """The images-per-class bar chart (SVG), rendered once per dataset, language and width and cached."""
    from classifier.datasets.charts import class_counts_svg

    language = (get_language() or "en").split("-")[0]
    target = cache_dir(dataset) / f"class-counts-{language}{'-narrow' if narrow else ''}.svg"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    labels = {"train": _("train"), "validation": _("validation"), "images": _("images")}
    svg = class_counts_svg(dataset.report.get("classes", []), dataset.split, labels=labels, narrow=narrow)
    atomic_write(target, lambda handle: handle.write(svg))
    return target


# 3. Internals -----------------------------------------------------------------------------------


def _check_options(*, name: str, seed: int, val_fraction: float) -> None:
    if not name or not name.strip():
        raise DatasetError(_("A dataset needs a name."))
    if len(name) > Dataset._meta.get_field("name").max_length:
        raise DatasetError(_("The name is too long."))
    if seed < 0:
        raise DatasetError(_("The seed must be zero or positive."))
    if not MIN_VAL_FRACTION <= val_fraction <= MAX_VAL_FRACTION:
        raise DatasetError(
            _("The validation fraction must be between %(low)s and %(high)s.")
            % {"low": MIN_VAL_FRACTION, "high": MAX_VAL_FRACTION}
        )


def _check_archive_size(size: int, label: str) -> None:
    limit = settings.BREEDLAB_MAX_ARCHIVE_BYTES
    if size > limit:
        raise DatasetError(
            _("%(name)s is %(size)s; archives may be at most %(limit)s.")
            % {"name": label, "size": human_size(size), "limit": human_size(limit)}
        )


def human_size(size: float) -> str:
    """Sizes in binary units in the active language, as Django's filesizeformat writes them
    ("1.0 GB", "1,0 ГБ"; 1 GB = 1024**3 bytes)."""
    from django.template.defaultfilters import filesizeformat

    return str(filesizeformat(size)).replace("\xa0", " ")
