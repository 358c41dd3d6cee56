"""Safe extraction of users' ZIP and tar archives in ImageFolder layout (one folder per class).

Pure Python (no Django; imports archive_members and training.data) so it can be tested without a
database. The one entry point is
``extract_archive(archive_path, dest, limits=...)``. It

1. detects the format by content (``zipfile.is_zipfile`` / ``tarfile.is_tarfile``), never by name;
2. streams every regular file into a private staging folder next to ``dest``, refusing the whole
   archive (``ArchiveError``, one sentence) on the first unsafe entry: absolute paths, drive
   letters, ``..``, links, device files and pipes, encrypted ZIP members, duplicate names, more
   entries or more bytes than the limits allow (bytes are counted while streaming, declared sizes
   are only used to refuse early), or a suspicious compression ratio;
3. skips junk (``__MACOSX/``, hidden files such as ``.DS_Store``, ``Thumbs.db``) and lists it;
4. arranges the files as ``<class>/<file>``: a single wrapping root folder that holds the class
   folders is stripped, deeper folders are flattened into their class (``beagle/a/1.jpg`` becomes
   ``beagle/a__1.jpg``), files outside any class folder are skipped;
5. checks every target stays inside the output folder and moves the staging folder to ``dest`` in
   one rename. On any failure the staging folder is removed, so nothing is left behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from classifier.datasets.archive_members import (
    READ_ERRORS,
    ArchiveError,
    ArchiveLimits,
    Entry,
    detect_format,
    human_bytes,
    open_entries,
)
from training.data import IMAGE_EXTENSIONS

__all__ = ["ArchiveError", "ArchiveLimits", "ExtractResult", "extract_archive"]

CHUNK_SIZE = 1024 * 1024
MAX_NAME_BYTES = 255
FLATTEN_SEPARATOR = "__"

# Only used to decide whether a single top-level folder is a wrapper or a class (see _wrapper_root).
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})

_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


DEFAULT_LIMITS = ArchiveLimits()


@dataclass(frozen=True)
class ExtractResult:
    """What ``extract_archive`` wrote. Paths are relative to ``root`` with forward slashes."""

    root: Path
    format: str  # "zip" or "tar"
    extracted: list[str] = field(default_factory=list)  # "<class>/<file>", sorted
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name in archive, reason)
    flattened: list[tuple[str, str]] = field(default_factory=list)  # (name in archive, written as)
    stripped_root: str | None = None  # the wrapping folder that was removed, if any
    total_bytes: int = 0

    @property
    def classes(self) -> list[str]:
        """Class folders that received at least one file."""
        return sorted({rel.split("/", 1)[0] for rel in self.extracted})

    def as_dict(self) -> dict:
        return {
            "root": str(self.root),
            "format": self.format,
            "extracted": list(self.extracted),
            "skipped": [{"name": name, "reason": reason} for name, reason in self.skipped],
            "flattened": [{"name": name, "written_as": rel} for name, rel in self.flattened],
            "stripped_root": self.stripped_root,
            "total_bytes": self.total_bytes,
        }


@dataclass
class _Staged:
    name: str  # as written in the archive, for messages
    parts: tuple[str, ...]
    blob: Path


def extract_archive(archive_path: Path, dest: Path, *, limits: ArchiveLimits = DEFAULT_LIMITS) -> ExtractResult:
    """Extract ``archive_path`` (ZIP or tar, any compression) into ``dest`` in ImageFolder layout.

    ``dest`` must not exist or must be an empty folder. Raises ``ArchiveError`` (and leaves nothing
    behind) when the archive is unsafe, damaged, too large or not an archive.
    """
    archive_path = Path(archive_path)
    dest = Path(dest).absolute()
    label = archive_path.name or str(archive_path)
    if not archive_path.is_file():
        raise ArchiveError(f"{label} does not exist or is not a file.")
    fmt = detect_format(archive_path, label, limits)
    if dest.is_symlink() or (dest.exists() and (not dest.is_dir() or any(dest.iterdir()))):
        raise ArchiveError(f"The destination {dest} already exists and is not an empty folder.")

    created_parents = _make_parents(dest.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extracting", dir=dest.parent))
    succeeded = False
    try:
        blobs = staging / "blobs"
        blobs.mkdir()
        with open_entries(archive_path, fmt, label, blobs, limits) as entries:
            staged, dirs, skipped, total = _stage(entries, blobs, label, limits, archive_path.stat().st_size)
        out = staging / "out"
        out.mkdir()
        extracted, flattened, stripped = _arrange(staged, dirs, skipped, out)
        os.replace(out, dest)  # one rename; on POSIX it also replaces an empty existing folder
        _verify_inside(dest, extracted, label)
        succeeded = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not succeeded:
            for folder in reversed(created_parents):  # only the ones this call created, if still empty
                try:
                    folder.rmdir()
                except OSError:
                    break

    return ExtractResult(
        root=dest,
        format=fmt,
        extracted=sorted(extracted),
        skipped=skipped,
        flattened=flattened,
        stripped_root=stripped,
        total_bytes=total,
    )


# 1. Format detection and readers -------------------------------------------------------------


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return list(reversed(missing))


# 2. Staging: checks and streaming copy ---------------------------------------------------------


def _stage(
    entries: Iterator[Entry], blobs: Path, label: str, limits: ArchiveLimits, archive_size: int
) -> tuple[list[_Staged], list[tuple[str, ...]], list[tuple[str, str]], int]:
    staged: list[_Staged] = []
    dirs: list[tuple[str, ...]] = []
    skipped: list[tuple[str, str]] = []
    seen: set[tuple[str, ...]] = set()
    total = 0
    for count, entry in enumerate(entries, start=1):
        if count > limits.max_entries:
            raise ArchiveError(f"{label} has more than {limits.max_entries:,} entries.")
        parts = _safe_parts(entry.name, label)
        if entry.kind in ("symlink", "hardlink"):
            raise ArchiveError(f"{label} contains a link ({entry.name!r}); links are not allowed.")
        if entry.kind == "special":
            raise ArchiveError(
                f"{label} contains a device file or pipe ({entry.name!r}); only files and folders are allowed."
            )
        if not parts:  # "./" and the like
            continue
        reason = _junk_reason(parts)
        if reason:
            skipped.append((entry.name, reason))
            continue
        if entry.kind == "dir":
            dirs.append(parts)
            continue
        if entry.encrypted:
            raise ArchiveError(
                f"{label} contains an encrypted file ({entry.name!r}); encrypted archives are not supported."
            )
        if parts in seen:
            raise ArchiveError(f"{label} contains {entry.name!r} more than once.")
        seen.add(parts)
        blob = blobs / str(len(staged))
        total = _copy_member(entry, blob, label, limits, total, archive_size)
        staged.append(_Staged(name=entry.name, parts=parts, blob=blob))
    return staged, dirs, skipped, total


def _safe_parts(name: str, label: str) -> tuple[str, ...]:
    """Split an entry name into path components, refusing anything that could escape the folder."""
    if "\x00" in name:
        raise ArchiveError(f"{label} contains an entry with a NUL character in its name ({name!r}).")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        # Newlines, tabs, escapes: they break URLs, logs and pages that show the name.
        raise ArchiveError(f"{label} contains an entry with a control character in its name ({name!r}).")
    normalised = name.replace("\\", "/")
    if normalised.startswith("/"):
        raise ArchiveError(f"{label} contains an entry with an absolute path ({name!r}).")
    if _DRIVE_LETTER.match(normalised):
        raise ArchiveError(f"{label} contains an entry with a drive letter ({name!r}).")
    parts = []
    for part in normalised.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise ArchiveError(f"{label} contains an entry that points outside its folder ({name!r}).")
        part = unicodedata.normalize("NFC", part)
        if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise ArchiveError(f"{label} contains a name longer than {MAX_NAME_BYTES} bytes ({name!r}).")
        parts.append(part)
    return tuple(parts)


def _junk_reason(parts: tuple[str, ...]) -> str | None:
    if "__MACOSX" in parts:
        return "macOS metadata (__MACOSX)"
    if any(part.startswith(".") for part in parts):
        return "hidden file or folder"
    if parts[-1].lower() in SYSTEM_FILES:
        return "system file"
    try:
        "/".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    return None


def _copy_member(entry: Entry, blob: Path, label: str, limits: ArchiveLimits, total: int, archive_size: int) -> int:
    """Stream one member into ``blob`` counting real bytes; return the new running total."""
    assert entry.open is not None
    try:
        source = entry.open()
    except ArchiveError:
        raise
    except RuntimeError as exc:  # zipfile: encrypted member without a password
        raise ArchiveError(
            f"{label} contains an encrypted file ({entry.name!r}); encrypted archives are not supported."
        ) from exc
    except NotImplementedError as exc:  # zipfile: compression method it cannot read
        raise ArchiveError(f"{label} uses a compression method that is not supported ({entry.name!r}).") from exc
    except READ_ERRORS as exc:
        raise ArchiveError(f"{label} is damaged: {entry.name!r} cannot be read ({exc}).") from exc

    written = 0
    member_cap = None if entry.compressed_size is None else max(entry.compressed_size, 1) * limits.max_ratio
    with source, open(blob, "xb") as out:
        while True:
            try:
                chunk = source.read(CHUNK_SIZE)
            except READ_ERRORS as exc:
                raise ArchiveError(f"{label} is damaged: {entry.name!r} cannot be read ({exc}).") from exc
            if not chunk:
                break
            written += len(chunk)
            total += len(chunk)
            if total > limits.max_total_bytes:
                raise ArchiveError(f"{label} unpacks to more than {human_bytes(limits.max_total_bytes)}.")
            past_grace = written > limits.ratio_grace_bytes
            if member_cap is not None and past_grace and written > member_cap:
                raise ArchiveError(
                    f"{label} looks like a zip bomb: {entry.name!r} unpacks to more than {limits.max_ratio:g} times its compressed size."
                )
            if total > limits.ratio_grace_bytes and total > max(archive_size, 1) * limits.max_ratio:
                raise ArchiveError(
                    f"{label} looks like a zip bomb: it unpacks to more than {limits.max_ratio:g} times its size."
                )
            out.write(chunk)
    return total


# 3. Layout: strip the wrapper folder, flatten deep folders, place files ------------------------


def _wrapper_root(files: list[tuple[str, ...]], dirs: list[tuple[str, ...]]) -> str | None:
    """The single top-level folder to strip, or None.

    Stripped when every file and folder sits inside one top-level folder, at least one file is two
    levels below it (``dogs/beagle/1.jpg``) and no image sits directly in it (which would make it
    a class folder, as in a one-class ``beagle/1.jpg`` archive). Only one level is ever stripped.
    """
    tops = {parts[0] for parts in files} | {parts[0] for parts in dirs}
    if len(tops) != 1 or any(len(parts) == 1 for parts in files):
        return None
    deeper = any(len(parts) >= 3 for parts in files)
    images_in_top = any(len(parts) == 2 and Path(parts[1]).suffix.lower() in IMAGE_EXTENSIONS for parts in files)
    return next(iter(tops)) if deeper and not images_in_top else None


def _arrange(
    staged: list[_Staged], dirs: list[tuple[str, ...]], skipped: list[tuple[str, str]], out: Path
) -> tuple[list[str], list[tuple[str, str]], str | None]:
    root = _wrapper_root([item.parts for item in staged], dirs)
    cut = 1 if root is not None else 0

    out_resolved = out.resolve()
    taken: set[tuple[str, str]] = set()
    extracted: list[str] = []
    flattened: list[tuple[str, str]] = []

    for parts in dirs:
        parts = parts[cut:]
        if parts:
            _make_class_dir(out, out_resolved, parts[0])

    # Files directly in a class folder keep their names; flattened ones get a unique name after them.
    direct = [item for item in staged if len(item.parts) - cut == 2]
    deep = sorted((item for item in staged if len(item.parts) - cut > 2), key=lambda item: item.parts)
    for item in staged:
        if len(item.parts) - cut < 2:
            skipped.append((item.name, "not inside a class folder"))
    for item in direct + deep:
        class_name, *subfolders, filename = item.parts[cut:]
        wanted = FLATTEN_SEPARATOR.join([*subfolders, filename])
        if len(wanted.encode("utf-8")) > MAX_NAME_BYTES:
            wanted = filename
        filename = _unique(class_name, wanted, taken)
        target = _make_class_dir(out, out_resolved, class_name) / filename
        if not target.resolve().is_relative_to(out_resolved):  # belt and braces
            raise ArchiveError(f"Refusing to write {item.name!r} outside the destination folder.")
        os.rename(item.blob, target)
        rel = f"{class_name}/{filename}"
        extracted.append(rel)
        if subfolders:
            flattened.append((item.name, rel))
    return extracted, flattened, root


def _make_class_dir(out: Path, out_resolved: Path, class_name: str) -> Path:
    folder = out / class_name
    folder.mkdir(exist_ok=True)
    if folder.is_symlink() or folder.resolve().parent != out_resolved:
        raise ArchiveError(f"Refusing to create the class folder {class_name!r} outside the destination folder.")
    return folder


def _unique(class_name: str, filename: str, taken: set[tuple[str, str]]) -> str:
    candidate, number = filename, 1
    stem, suffix = os.path.splitext(filename)
    while (class_name, candidate) in taken:
        number += 1
        candidate = f"{stem}~{number}{suffix}"
    taken.add((class_name, candidate))
    return candidate


def _verify_inside(dest: Path, extracted: list[str], label: str) -> None:
    root = dest.resolve()
    for rel in extracted:
        path = dest / rel
        if path.is_symlink() or not path.resolve().is_relative_to(root):
            shutil.rmtree(dest, ignore_errors=True)
            raise ArchiveError(f"{label}: {rel!r} ended up outside the destination folder; nothing was kept.")
