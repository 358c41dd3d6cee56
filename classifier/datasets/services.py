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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import Max, ProtectedError
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from classifier.datasets import selectors
from classifier.datasets.archives import ArchiveError, ArchiveLimits, extract_archive
from classifier.datasets.report import build_report, stratified_split
from classifier.models import Dataset, Feedback
from training.data import IMAGE_EXTENSIONS
from training.files import atomic_write

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
DEFAULT_VAL_FRACTION = 0.2
MIN_VAL_FRACTION = 0.05
MAX_VAL_FRACTION = 0.5
MIN_SIDE = 64
MIN_IMAGES_PER_CLASS = 5
THUMBNAIL_SIDE = 160
COPY_CHUNK = 1024 * 1024


class DatasetError(Exception):
    """A dataset cannot be imported, changed or deleted. The message is one sentence for the user.

    ``dataset`` is the row that recorded the failure (status ``failed``), when one was created.
    """

    def __init__(self, message: str, *, dataset: Dataset | None = None) -> None:
        super().__init__(message)
        self.dataset = dataset


@dataclass(frozen=True)
class Addition:
    """One file to add to a new version: ``<class_name>/<filename>``, content from ``open()``."""

    class_name: str
    filename: str
    open: Callable[[], BinaryIO]
    origin: str  # for the report, e.g. "correction #12"


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
    with _upload_on_disk(upload) as path:
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

    return _import(
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
        skipped = _copy_tree(source, folder)
        return skipped, {"kind": "folder", "name": source_label or str(source)}

    return _import(
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
            shutil.copytree(parent_folder, out, symlinks=False, copy_function=_link_or_copy)
            added = [_write_addition(out, item) for item in additions]
            os.replace(out, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return [], {"kind": "version", "name": str(parent), "parent": parent.pk, "added": added}

    return _import(
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
    description = _("%(parent)s with %(count)d merged correction(s).") % {"parent": dataset, "count": len(additions)}
    version = dataset_new_version(parent=dataset, additions=additions, created_by=created_by, description=description)
    # Conditional: a correction merged meanwhile by someone else keeps its first merge.
    Feedback.objects.filter(pk__in=[item.pk for item, _class in mergeable], merged_into__isnull=True).update(
        merged_into=version
    )
    return version


def dataset_delete(*, dataset: Dataset) -> None:
    """Delete a dataset that no run uses, with its folder and cached thumbnails."""
    if dataset.status == Dataset.Status.IMPORTING:
        raise DatasetError(_("%(dataset)s is still importing; it cannot be deleted now.") % {"dataset": dataset})
    if dataset.runs.exists():
        raise DatasetError(_("%(dataset)s is used by training runs and cannot be deleted.") % {"dataset": dataset})
    folder = selectors.dataset_folder(dataset)
    cache = _cache_dir(dataset)
    try:
        with transaction.atomic():
            dataset.delete()
    except ProtectedError as exc:  # a run was created meanwhile
        raise DatasetError(_("%(dataset)s is used by training runs and cannot be deleted.") % {"dataset": dataset}) from exc
    _remove_folder(folder)
    shutil.rmtree(cache, ignore_errors=True)


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
            _remove_folder(selectors.dataset_folder(dataset))
            reaped.append(dataset.pk)
    if reaped:
        log.warning("failed interrupted dataset imports %s", reaped)
    return reaped


def dataset_thumbnail(*, dataset: Dataset, path: Path, relpath: str) -> Path:
    """A small JPEG of one of the dataset's images, made once and cached under MEDIA_ROOT.

    ``path`` must come from ``selectors.dataset_file_path`` (the whitelisted file)."""
    from PIL import Image, ImageOps

    target = _cache_dir(dataset) / "thumbs" / f"{hashlib.sha256(relpath.encode()).hexdigest()[:40]}.jpg"
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


def dataset_chart(*, dataset: Dataset) -> Path:
    """The images-per-class bar chart (SVG), rendered once per dataset and cached."""
    from classifier.datasets.charts import class_counts_svg

    target = _cache_dir(dataset) / "class-counts.svg"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    svg = class_counts_svg(dataset.report.get("classes", []), dataset.split)
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
    """Sizes in binary units, labelled as Django's filesizeformat labels them (1 GB = 1024**3 bytes)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _upload_on_disk(upload: UploadedFile) -> Iterator[Path]:
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    with tempfile.NamedTemporaryFile(prefix="breedlab-upload-", dir=settings.FILE_UPLOAD_TEMP_DIR) as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def _import(
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
    dataset = _reserve(name=name, parent=parent, created_by=created_by, description=description)
    folder = selectors.dataset_folder(dataset)
    done = False
    try:
        extra_skipped, source = fill(folder)
        _finish(dataset, folder, extra_skipped, source, seed=seed, val_fraction=val_fraction, inherit=inherit_split)
        done = True
        return dataset
    except (ArchiveError, DatasetError) as exc:
        message = str(exc)
    except OSError as exc:
        log.exception("dataset %s: import failed", dataset.pk)
        message = _("The files could not be written: %(error)s") % {"error": exc.strerror or exc}
    except Exception as exc:
        log.exception("dataset %s: import failed", dataset.pk)
        message = _("The import failed unexpectedly (%(error)s).") % {"error": type(exc).__name__}
    finally:
        if not done:
            _remove_folder(folder)
    Dataset.objects.filter(pk=dataset.pk).update(status=Dataset.Status.FAILED, error=message)
    dataset.refresh_from_db()
    raise DatasetError(message, dataset=dataset)


def _reserve(*, name: str, parent: Dataset | None, created_by, description: str) -> Dataset:
    """A new ``importing`` row with the next version number of ``name`` and an unused folder."""
    root = Path(settings.DATASETS_ROOT)
    for _attempt in range(5):
        versions = Dataset.objects.filter(name=name)
        latest_version = versions.aggregate(latest=Max("version"))["latest"] or 0
        previous = versions.order_by("-version").first()
        prefix = PurePosixPath(previous.path).parent.as_posix() if previous else _new_prefix(name)
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


def _new_prefix(name: str) -> str:
    root = Path(settings.DATASETS_ROOT)
    slug = slugify(name)[:60].strip("-") or "dataset"
    candidate, number = slug, 1
    while (root / candidate).exists() or Dataset.objects.filter(path__startswith=f"{candidate}/").exists():
        number += 1
        candidate = f"{slug}-{number}"
    return candidate


def _finish(
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
    split = _split(usable, seed=seed, val_fraction=val_fraction, inherit=inherit)
    dataset.report = report
    dataset.classes = [item["name"] for item in report["classes"] if item["images"]]
    dataset.image_count = report["total_images"]
    dataset.split = split
    dataset.status = Dataset.Status.READY
    dataset.error = ""
    dataset.save(update_fields=["report", "classes", "image_count", "split", "status", "error"])


def _split(usable: dict[str, list[str]], *, seed: int, val_fraction: float, inherit: dict | None) -> dict:
    """Seeded stratified split; files already in ``inherit`` keep their side."""
    old_train = set((inherit or {}).get("train", []))
    old_val = set((inherit or {}).get("val", []))
    fresh = stratified_split(
        {name: [f for f in files if f not in old_train and f not in old_val] for name, files in usable.items()},
        val_fraction=val_fraction,
        seed=seed,
    )
    every = {f for files in usable.values() for f in files}
    return {
        "train": sorted((every & old_train) | set(fresh["train"])),
        "val": sorted((every & old_val) | set(fresh["val"])),
        "seed": seed,
        "val_fraction": val_fraction,
    }


def _copy_tree(source: Path, dest: Path) -> list[dict]:
    """Copy regular files of ``source`` into ``dest`` (via a staging folder and one rename).
    Returns skip entries for links, hidden files and files outside class folders."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".copying", dir=dest.parent))
    skipped: list[dict] = []
    try:
        out = staging / "out"
        out.mkdir()
        for current, dirnames, filenames in os.walk(source):
            current_path = Path(current)
            rel_dir = current_path.relative_to(source)
            kept = []
            for dirname in sorted(dirnames):
                rel = (rel_dir / dirname).as_posix()
                if dirname.startswith("."):
                    skipped.append({"path": rel, "reason": "hidden", "detail": "hidden or system folder"})
                elif (current_path / dirname).is_symlink():
                    skipped.append({"path": rel, "reason": "link", "detail": "links are not copied"})
                else:
                    kept.append(dirname)
                    (out / rel_dir / dirname).mkdir()
            dirnames[:] = kept
            for filename in sorted(filenames):
                path = current_path / filename
                rel = (rel_dir / filename).as_posix()
                if filename.startswith(".") or filename.lower() in {"thumbs.db", "desktop.ini"}:
                    skipped.append({"path": rel, "reason": "hidden", "detail": "hidden or system file"})
                elif path.is_symlink():
                    skipped.append({"path": rel, "reason": "link", "detail": "links are not copied"})
                elif rel_dir == Path("."):
                    skipped.append({"path": rel, "reason": "outside_class", "detail": "not inside a class folder"})
                elif path.is_file():
                    shutil.copyfile(path, out / rel_dir / filename, follow_symlinks=False)
                else:
                    skipped.append({"path": rel, "reason": "special", "detail": "not a regular file"})
        os.replace(out, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return skipped


def _link_or_copy(src: str, dst: str) -> str:
    """Datasets are never changed in place, so versions can share files through hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def _write_addition(out: Path, item: Addition) -> dict:
    for part in (item.class_name, item.filename):
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part or part.startswith("."):
            raise DatasetError(_("%(name)r is not a valid file or class name.") % {"name": part})
    folder = out / item.class_name
    folder.mkdir(exist_ok=True)
    stem, suffix = os.path.splitext(item.filename)
    target, number = folder / item.filename, 1
    while target.exists():
        number += 1
        target = folder / f"{stem}~{number}{suffix}"
    with item.open() as source, open(target, "xb") as handle:
        shutil.copyfileobj(source, handle, COPY_CHUNK)
    return {"path": f"{item.class_name}/{target.name}", "origin": item.origin}


def _remove_folder(folder: Path) -> None:
    """Remove a dataset folder and its name folder when that is left empty (never the root)."""
    root = Path(settings.DATASETS_ROOT).resolve()
    if not folder.resolve().is_relative_to(root) or folder.resolve() == root:
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    if parent.resolve() != root:
        with contextlib.suppress(OSError):
            parent.rmdir()


def _cache_dir(dataset: Dataset) -> Path:
    """Derived files of one dataset. Keyed by id and folder, so a reused id never sees stale files."""
    key = hashlib.sha256(f"{dataset.pk}:{dataset.path}:{dataset.created_at.isoformat()}".encode()).hexdigest()[:12]
    return Path(settings.MEDIA_ROOT) / "cache" / "datasets" / f"{dataset.pk}-{key}"
