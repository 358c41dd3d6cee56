"""Reading users' archives member by member, format-independent: detecting ZIP or tar by content,
iterating members as ``Entry`` records, refusing a ZIP whose central directory already admits too
much. Also the ``ArchiveError`` / ``ArchiveLimits`` that archives.py re-exports.

Pure Python (no Django); imported only by datasets/archives.py.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import lzma
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_ZIP_UTF8_FLAG = 0x800
_ZIP_ENCRYPTED_FLAG = 0x1


# Errors that reading a damaged archive can raise from zipfile, tarfile and the decompressors.
READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError)


class ArchiveError(ValueError):
    """The archive is unsafe, damaged or too large. The message is one sentence for the user."""


@dataclass(frozen=True, kw_only=True)
class ArchiveLimits:
    """Caps that make zip bombs and file-count bombs fail fast.

    ``max_entries`` counts every entry (files, folders, skipped junk). ``max_ratio`` is checked per
    ZIP member and for the archive as a whole, but only once more than ``ratio_grace_bytes`` have
    been written, so small, very compressible files do not trip it.
    """

    max_total_bytes: int = 2 * 1024**3
    max_entries: int = 100_000
    max_ratio: float = 200.0
    ratio_grace_bytes: int = 1024**2

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_entries", "max_ratio"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ArchiveLimits.{name} must be positive, got {getattr(self, name)!r}")
        if self.ratio_grace_bytes < 0:
            raise ValueError(f"ArchiveLimits.ratio_grace_bytes must be >= 0, got {self.ratio_grace_bytes!r}")


@dataclass
class Entry:
    """One archive member, format-independent. ``open`` is valid only while it is the current one."""

    name: str
    kind: str  # "file" | "dir" | "symlink" | "hardlink" | "special"
    open: Callable[[], BinaryIO] | None = None
    compressed_size: int | None = None  # ZIP only
    encrypted: bool = False


def detect_format(path: Path, label: str) -> str:
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (*READ_ERRORS, ValueError):
        pass
    raise ArchiveError(f"{label} is neither a ZIP nor a tar archive.")


class open_entries:
    """Context manager yielding an iterator of ``Entry`` for either format."""

    def __init__(self, path: Path, fmt: str, label: str, blobs: Path, limits: ArchiveLimits) -> None:
        self.path, self.fmt, self.label, self.blobs, self.limits = path, fmt, label, blobs, limits
        self._archive: zipfile.ZipFile | tarfile.TarFile | None = None

    def __enter__(self) -> Iterator[Entry]:
        try:
            if self.fmt == "zip":
                self._archive = zipfile.ZipFile(self.path)
                _refuse_declared_excess(self._archive, self.label, self.limits)
                return _zip_entries(self._archive)
            # "r:*" (not the "r|*" stream mode): the file objects it uses decompress in bounded chunks.
            self._archive = tarfile.open(self.path, mode="r:*", encoding="utf-8", errors="surrogateescape")
            return _tar_entries(self._archive, self.label, self.blobs)
        except READ_ERRORS as exc:
            raise ArchiveError(f"{self.label} is a damaged {self.fmt.upper()} archive ({exc}).") from exc

    def __exit__(self, *exc_info: object) -> None:
        if self._archive is not None:
            self._archive.close()


def _refuse_declared_excess(archive: zipfile.ZipFile, label: str, limits: ArchiveLimits) -> None:
    """Fail before writing anything when the central directory already admits too much. Declared
    sizes are not trusted otherwise: the copy counts real bytes."""
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"{label} has more than {limits.max_entries:,} entries.")
    if sum(info.file_size for info in infos) > limits.max_total_bytes:
        raise ArchiveError(f"{label} unpacks to more than {human_bytes(limits.max_total_bytes)}.")


def _zip_name(info: zipfile.ZipInfo) -> str:
    """The member's name. zipfile decodes UTF-8 when flag 0x800 is set and cp437 otherwise; many
    tools write UTF-8 without setting the flag, so a cp437 name that is valid UTF-8 is taken as such."""
    name = info.filename
    if not info.flag_bits & _ZIP_UTF8_FLAG and not name.isascii():
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    return name


def _zip_entries(archive: zipfile.ZipFile) -> Iterator[Entry]:
    for info in archive.infolist():
        mode = info.external_attr >> 16
        file_type = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            kind = "symlink"
        elif info.is_dir() or file_type == stat.S_IFDIR:
            kind = "dir"
        elif file_type in (0, stat.S_IFREG):
            kind = "file"
        else:
            kind = "special"
        yield Entry(
            name=_zip_name(info),
            kind=kind,
            open=lambda info=info: archive.open(info),
            compressed_size=info.compress_size,
            encrypted=bool(info.flag_bits & _ZIP_ENCRYPTED_FLAG),
        )


def _tar_entries(archive: tarfile.TarFile, label: str, blobs: Path) -> Iterator[Entry]:
    while True:
        try:
            member = archive.next()
        except READ_ERRORS as exc:
            raise ArchiveError(f"{label} is a damaged tar archive ({exc}).") from exc
        if member is None:
            return
        if member.issym():
            kind = "symlink"
        elif member.islnk():
            kind = "hardlink"
        elif member.isdir():
            kind = "dir"
        elif member.isreg():
            kind = "file"
        else:  # character/block devices, FIFOs, anything unknown
            kind = "special"

        def open_member(member: tarfile.TarInfo = member) -> BinaryIO:
            # An extra layer under our own checks: the standard library's "data" extraction filter.
            try:
                tarfile.data_filter(member, str(blobs))
            except tarfile.FilterError as exc:
                raise ArchiveError(f"{label} contains an unsafe entry ({exc}).") from exc
            handle = archive.extractfile(member)
            if handle is None:  # cannot happen for regular files
                raise ArchiveError(f"{label} contains an entry that cannot be read ({member.name!r}).")
            return handle

        yield Entry(name=member.name, kind=kind, open=open_member)


def human_bytes(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:,} {unit}" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
