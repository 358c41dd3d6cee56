"""Reading users' archives member by member, format-independent: detecting ZIP or tar by content,
iterating members as ``Entry`` records, refusing a ZIP whose central directory already admits too
much. Also the ``ArchiveError`` / ``ArchiveLimits`` that archives.py re-exports.

Pure Python (no Django); imported only by datasets/archives.py.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import stat
import struct
import sys
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


# ---- Bounds read before any parser sees the archive ------------------------------------------------
# The standard library reads a tar's GNU long-name / pax header bodies whole into memory, and
# parses a ZIP's whole central directory on opening; both are capped here first.
MAX_TAR_HEADER_BYTES = 64 * 1024  # a long name, link target or pax record set; real ones are < 4 KiB
MAX_ZIP_DIRECTORY_BYTES = 64 * 1024 * 1024
_TAR_META_TYPES = {b"L", b"K", b"x", b"g", b"X"}  # GNU long name / long link, pax (and Solaris) headers
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"

# tarfile CVE-2024-6232 (quadratic pax header parsing) is fixed in 3.11.10, 3.12.6 and 3.13.0;
# CVE-2025-8194 (negative member offsets: an endless loop) in 3.11.14, 3.12.12, 3.13.6 and 3.14.0.
# On older interpreters the header cap above bounds the first and the patch below stops the second.
PATCHED_PYTHON = {(3, 11): (3, 11, 14), (3, 12): (3, 12, 12), (3, 13): (3, 13, 6)}


def python_tarfile_patched(version: tuple[int, ...] | None = None) -> bool:
    version = tuple(version or sys.version_info[:3])
    minimum = PATCHED_PYTHON.get(version[:2])
    if minimum is None:
        return version[:2] > (3, 13)
    return version >= minimum


if not python_tarfile_patched():  # the mitigation CPython's advisory for CVE-2025-8194 gives
    _original_block = tarfile.TarInfo._block

    def _block_refusing_negative(self, count, _original=_original_block):
        if count < 0:
            raise tarfile.InvalidHeaderError("invalid offset")
        return _original(self, count)

    tarfile.TarInfo._block = _block_refusing_negative


def zip_directory_bounds(path: Path) -> tuple[int, int] | None:
    """(entry count, central directory bytes) from the end-of-central-directory record (ZIP64
    aware), read from the file's last 64 KiB; None when there is no such record."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        tail_start = max(0, size - (65535 + 22))
        handle.seek(tail_start)
        tail = handle.read()
        at = tail.rfind(_EOCD)
        if at < 0 or len(tail) - at < 22:
            return None
        entries, directory_bytes = struct.unpack("<xxxxxxxxxxHI", tail[at + 0 : at + 16])
        if entries == 0xFFFF or directory_bytes == 0xFFFFFFFF:
            locator = at - 20
            if locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
                (record_offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
                handle.seek(record_offset)
                record = handle.read(56)
                if len(record) == 56 and record[:4] == _ZIP64_EOCD:
                    entries, directory_bytes = struct.unpack("<QQ", record[32:48])
        return entries, directory_bytes


def _prescan_zip(path: Path, label: str, limits: ArchiveLimits) -> None:
    bounds = zip_directory_bounds(path)
    if bounds is None:
        return  # zipfile will call it damaged
    entries, directory_bytes = bounds
    if entries > limits.max_entries:
        raise ArchiveError(f"{label} has more than {limits.max_entries:,} entries.")
    if directory_bytes > MAX_ZIP_DIRECTORY_BYTES:
        raise ArchiveError(f"{label} has a table of contents larger than {human_bytes(MAX_ZIP_DIRECTORY_BYTES)}.")


def _open_decompressed(path: Path) -> BinaryIO:
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if magic[:3] == b"BZh":
        return bz2.open(path, "rb")
    if magic == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _tar_number(field: bytes) -> int | None:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256; 0xff starts a negative number
        value = int.from_bytes(field[1:], "big")
        return -1 if field[:1] == b"\xff" else value
    text = field.split(b"\x00", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        return None


def _tar_header_ok(block: bytes) -> bool:
    stored = _tar_number(block[148:156])
    computed = sum(block[:148]) + 8 * 32 + sum(block[156:])
    return stored is not None and stored == computed


def _skip(stream: BinaryIO, count: int) -> bool:
    while count:
        chunk = stream.read(min(count, 1024 * 1024))
        if not chunk:
            return False
        count -= len(chunk)
    return True


def prescan_tar(path: Path, label: str, limits: ArchiveLimits) -> bool:
    """Walk the tar's 512-byte headers without tarfile: False when the file does not start with a
    tar header; ArchiveError on a negative size, a long-name / pax header over
    MAX_TAR_HEADER_BYTES, more entries or declared bytes than the limits. Reads in bounded chunks."""
    entries = total = 0
    first = True
    try:
        with _open_decompressed(path) as stream:
            while True:
                block = stream.read(512)
                if len(block) < 512 or block == bytes(512):
                    return not first
                if not _tar_header_ok(block):
                    if first:
                        return False
                    raise ArchiveError(f"{label} is a damaged tar archive (a header's checksum is wrong).")
                first = False
                size = _tar_number(block[124:136])
                if size is None or size < 0:
                    raise ArchiveError(f"{label} is a damaged tar archive (a header declares an invalid size).")
                kind = block[156:157]
                if kind in _TAR_META_TYPES:
                    if size > MAX_TAR_HEADER_BYTES:
                        raise ArchiveError(
                            f"{label} has a long-name or pax header of {human_bytes(size)} "
                            f"(at most {human_bytes(MAX_TAR_HEADER_BYTES)})."
                        )
                else:
                    entries += 1
                    if entries > limits.max_entries:
                        raise ArchiveError(f"{label} has more than {limits.max_entries:,} entries.")
                    if kind in (b"0", b"\x00", b"7", b"S"):
                        total += size
                        if total > limits.max_total_bytes:
                            raise ArchiveError(f"{label} unpacks to more than {human_bytes(limits.max_total_bytes)}.")
                if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
                    size = 0  # links, devices, folders and pipes carry no data (as tarfile reads them)
                if not _skip(stream, -(-size // 512) * 512):
                    return True  # truncated: tarfile reports it as damaged
    except ArchiveError:
        raise
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
        return not first  # damaged after a valid header: tarfile reports it as a damaged tar


def detect_format(path: Path, label: str, limits: ArchiveLimits | None = None) -> str:
    if zipfile.is_zipfile(path):  # reads only the end record
        return "zip"
    # Before tarfile reads anything (tarfile.is_tarfile parses the first member, long names whole).
    if prescan_tar(path, label, limits or ArchiveLimits()):
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
                _prescan_zip(self.path, self.label, self.limits)  # before zipfile parses the directory
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
