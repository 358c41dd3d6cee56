"""Atomic file writes for both worlds: a temp file in the target's folder, fsync, os.replace, then
fsync of the folder, so a crash never leaves a half-written file behind.

training/ owns this module; the Django app imports it (thumbnails, charts, calibration, ONNX
exports). Imports nothing but the standard library.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block ends without error, it replaces ``path``.

    For writers that want a file name (``torch.onnx.export``); the temp file is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        yield Path(tmp)
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync(path.parent, os.O_RDONLY)


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Atomically replace ``path`` with what ``write(handle)`` writes to a binary handle."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    atomic_write(path, lambda handle: handle.write(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, sort_keys: bool = False) -> None:
    """Atomically replace ``path`` with ``obj`` as indented JSON and a final newline."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n").encode())


@functools.cache
def _umask() -> int:
    # Read once per process: os.umask() can only be read by setting it, which races with threads.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str | os.PathLike[str], flags: int) -> None:
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
