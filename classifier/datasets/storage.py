"""A dataset's files on disk: its error type, copying a server folder in (staging folder, one
rename), writing added files, hard-linking versions, removing folders, the cache folder of
derived files (thumbnails, charts), spooling an upload to disk.

Used by datasets/services.py only; imports Django settings and classifier.models.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils.translation import gettext as _

from classifier.models import Dataset

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


@contextlib.contextmanager
def upload_on_disk(upload: UploadedFile) -> Iterator[Path]:
    if hasattr(upload, "temporary_file_path"):
        yield Path(upload.temporary_file_path())
        return
    with tempfile.NamedTemporaryFile(prefix="breedlab-upload-", dir=settings.FILE_UPLOAD_TEMP_DIR) as handle:
        for chunk in upload.chunks():
            handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def copy_tree(source: Path, dest: Path) -> list[dict]:
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


def link_or_copy(src: str, dst: str) -> str:
    """Datasets are never changed in place, so versions can share files through hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def write_addition(out: Path, item: Addition) -> dict:
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


def remove_folder(folder: Path) -> None:
    """Remove a dataset folder and its name folder when that is left empty (never the root)."""
    root = Path(settings.DATASETS_ROOT).resolve()
    if not folder.resolve().is_relative_to(root) or folder.resolve() == root:
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    if parent.resolve() != root:
        with contextlib.suppress(OSError):
            parent.rmdir()


def cache_dir(dataset: Dataset) -> Path:
    """Derived files of one dataset. Keyed by id and folder, so a reused id never sees stale files."""
    key = hashlib.sha256(f"{dataset.pk}:{dataset.path}:{dataset.created_at.isoformat()}".encode()).hexdigest()[:12]
    return Path(settings.MEDIA_ROOT) / "cache" / "datasets" / f"{dataset.pk}-{key}"
