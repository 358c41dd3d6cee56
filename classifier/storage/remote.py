"""Datasets, run folders and model versions in object storage (``BREEDLAB_STORAGE_URL=s3://...``).

With a local storage URL (the default) every function here does nothing: DATASETS_ROOT and
RUNS_ROOT are the files themselves (one machine, or a mount every host shares). With S3 they are
this host's caches, and the bucket is the truth (training/syncdir.py: content-addressed blobs and
a manifest written last)::

    <prefix>/datasets/<name>/v<version>/{manifest.json, blobs/<sha256>}   one per dataset version
    <prefix>/runs/run-<id>/{manifest.json, blobs/<sha256>}                 a run folder (its model version)
    <prefix>/runs/imported/<id>/{manifest.json, blobs/<sha256>}            an imported model version

- The web process that imports a dataset version publishes it before marking it ready; workers
  and other web hosts download it once into DATASETS_ROOT (a version never changes).
- A worker trains into RUNS_ROOT/run-<id> and publishes the folder after each checkpoint and at
  the end (a manifest marked final). A worker resuming the run downloads the latest manifest.
- Web processes download a model version's folder once, on first use (serving's cache, the
  pages, exports), and again only while its last download was not final.

The manifest last downloaded into (or published from) a local folder is kept under
``BREEDLAB_STORAGE_CACHE_DIR/manifests/``.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings

from training.files import atomic_write_json
from training.objectstore import ObjectStore, open_store
from training.syncdir import pull_dir, push_dir, read_manifest

DATASETS, RUNS = "datasets", "runs"
_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def store() -> ObjectStore | None:
    """The bucket, or None when files are local."""
    if not settings.BREEDLAB_STORAGE_S3:
        return None
    return _store_for(settings.BREEDLAB_STORAGE_URL, os.environ.get("AWS_ENDPOINT_URL", ""))


@functools.cache
def _store_for(url: str, endpoint: str) -> ObjectStore | None:
    return open_store(url)  # one boto3 client per process (and endpoint: tests start their own servers)


def enabled() -> bool:
    return bool(settings.BREEDLAB_STORAGE_S3)


def _root(kind: str) -> Path:
    return Path(settings.DATASETS_ROOT if kind == DATASETS else settings.RUNS_ROOT)


def _checked(relative: str) -> str:
    rel = PurePosixPath(relative or "")
    if not relative or rel.is_absolute() or ".." in rel.parts or str(rel) in ("", "."):
        raise ValueError(f"{relative!r} is not a folder inside the storage root")
    return rel.as_posix()


def prefix(kind: str, relative: str) -> str:
    return f"{kind}/{_checked(relative)}"


def _marker(kind: str, relative: str) -> Path:
    return Path(settings.BREEDLAB_STORAGE_CACHE_DIR) / "manifests" / kind / f"{_checked(relative)}.json"


def _lock(kind: str, relative: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((kind, relative), threading.Lock())


def _local_manifest(kind: str, relative: str) -> dict[str, Any] | None:
    try:
        return json.loads(_marker(kind, relative).read_text())
    except (OSError, ValueError):
        return None


def publish(kind: str, relative: str, *, final: bool = False) -> dict[str, Any] | None:
    """Upload the local folder's files, then its manifest (``final``: nothing will change any more,
    so blobs only earlier uploads name, such as a finished run's training checkpoint, are removed).
    None when files are local."""
    bucket = store()
    if bucket is None:
        return None
    folder = _root(kind) / _checked(relative)
    with _lock(kind, relative):
        manifest = push_dir(bucket, prefix(kind, relative), folder, extra={"final": final}, keep_previous=not final)
        atomic_write_json(_marker(kind, relative), manifest)
    return manifest


def local(kind: str, relative: str, *, fresh: bool = False) -> Path:
    """The local folder of a dataset version or run, downloaded first when its bytes are in the
    bucket: once (a final manifest is never fetched again) unless ``fresh`` asks for the latest."""
    folder = _root(kind) / _checked(relative)
    bucket = store()
    if bucket is None:
        return folder
    with _lock(kind, relative):
        had = _local_manifest(kind, relative)
        if had is not None and had.get("final") and not fresh:
            return folder
        pull_dir(bucket, prefix(kind, relative), folder, marker=_marker(kind, relative))
    return folder


def dataset_local(relative: str) -> Path:
    return local(DATASETS, relative)


def run_local(relative: str, *, fresh: bool = False) -> Path:
    return local(RUNS, relative, fresh=fresh)


def published_files(kind: str, relative: str) -> dict[str, Any] | None:
    """The files the bucket's manifest names (relative path -> sha256, size); None when files are
    local or nothing was published."""
    bucket = store()
    if bucket is None:
        return None
    manifest = read_manifest(bucket, prefix(kind, relative))
    return None if manifest is None else manifest["files"]


def stored_bytes(kind: str, relative: str) -> int | None:
    """Bytes the folder takes in the bucket (every object under its prefix); None when files are local."""
    bucket = store()
    return None if bucket is None else bucket.size(prefix(kind, relative))


def remove(kind: str, relative: str) -> int:
    """Delete the folder's objects from the bucket and its local copy's marker; returns the bytes
    the bucket freed (0 when files are local)."""
    bucket = store()
    if bucket is None:
        return 0
    freed = bucket.delete_prefix(prefix(kind, relative))
    _marker(kind, relative).unlink(missing_ok=True)
    return freed


def bucket_bytes() -> dict[str, int]:
    """Bytes in the bucket per kind (datasets, runs); empty when files are local."""
    bucket = store()
    if bucket is None:
        return {}
    return {kind: bucket.size(kind) for kind in (DATASETS, RUNS)}
