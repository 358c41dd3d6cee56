"""A local folder <-> an object-storage prefix, made atomic by content-addressed keys and a manifest
written last (never by renames, which object storage does not have).

Under a folder's prefix ``P`` (``runs/run-7``, ``datasets/dogs/v1``) the bucket holds::

    P/blobs/<sha256>     each file's bytes, under the SHA-256 of those bytes (written once, never changed)
    P/manifest.json      {"format": 1, "sequence": n, "files": {"checkpoint/last.json": {"sha256": ..., "size": ...}, ...}}

``push_dir`` uploads the blobs the manifest does not have yet, then writes the new manifest: that
one PUT (atomic in S3) makes the new state visible. A worker that dies between the two leaves the
previous manifest, whose blobs are all still there; a reader never sees a half-uploaded state,
because the manifest names only blobs that were completely uploaded. Blobs that neither the new nor
the previous manifest names are removed after the manifest is written (a reader that fetched the
previous manifest a moment ago still finds its blobs).

``pull_dir`` reads the manifest and downloads the files whose bytes it does not have (each written
atomically and checked against its hash), then records the manifest in a local marker file.

Imports nothing of classifier/ or Django.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from training.files import atomic_path, atomic_write_json
from training.objectstore import ObjectStore, StorageError

FORMAT = 1
MANIFEST = "manifest.json"
BLOBS = "blobs"
_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def local_files(folder: Path) -> dict[str, Path]:
    """The regular files under ``folder`` by relative POSIX path. Hidden names (the atomic writer's
    ``.name.*.tmp`` files among them) and links are left out: they are never published."""
    found: dict[str, Path] = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            found[path.relative_to(folder).as_posix()] = path
    return found


def read_manifest(store: ObjectStore, prefix: str) -> dict[str, Any] | None:
    """The folder's current manifest, or None when nothing was published under ``prefix``."""
    data = store.get_bytes(f"{prefix}/{MANIFEST}")
    if data is None:
        return None
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise StorageError(f"The manifest of {prefix} in object storage is not JSON ({exc}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise StorageError(f"The manifest of {prefix} in object storage has an unknown format.")
    return manifest


def manifest_bytes(manifest: dict[str, Any] | None) -> int:
    """The bytes of the files a manifest names (each counted once per name)."""
    return sum(int(entry["size"]) for entry in (manifest or {}).get("files", {}).values())


def push_dir(
    store: ObjectStore, prefix: str, folder: Path, *, previous: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None, keep_previous: bool = True,
) -> dict[str, Any]:
    """Publish ``folder`` under ``prefix``: new blobs first, the manifest last. Returns the manifest.

    ``previous``: the manifest this process published last (saves reading it back); blobs it names
    are not uploaded again. ``extra``: more fields for the manifest (e.g. ``{"final": True}``).
    ``keep_previous=False`` (a last upload nobody resumes from) also removes the previous
    manifest's blobs, e.g. a finished run's last training checkpoint.
    """
    folder = Path(folder)
    current = previous if previous is not None else read_manifest(store, prefix)
    known = {entry["sha256"] for entry in (current or {}).get("files", {}).values()}
    files: dict[str, dict[str, Any]] = {}
    for rel, path in local_files(folder).items():
        size = path.stat().st_size
        sha = file_sha256(path)
        if sha not in known:
            store.put_file(f"{prefix}/{BLOBS}/{sha}", path)
            known.add(sha)
        files[rel] = {"sha256": sha, "size": size}
    manifest = {**(extra or {}), "format": FORMAT, "sequence": int((current or {}).get("sequence", 0)) + 1, "files": files}
    # 1. every blob it names is uploaded; 2. this one PUT makes them visible; 3. then prune.
    store.put_bytes(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1, sort_keys=True).encode())
    keep = {e["sha256"] for e in files.values()}
    if keep_previous:
        keep |= {e["sha256"] for e in (current or {}).get("files", {}).values()}
    stale = [name for name, _size in store.list(f"{prefix}/{BLOBS}") if name.rsplit("/", 1)[-1] not in keep]
    if stale:
        store.delete(stale)
    return manifest


def _safe_target(folder: Path, rel: str) -> Path:
    parts = PurePosixPath(rel)
    if not rel or parts.is_absolute() or ".." in parts.parts or any(p.startswith(".") for p in parts.parts):
        raise StorageError(f"The manifest names an unsafe path {rel!r}.")
    return folder / parts


def _download(store: ObjectStore, prefix: str, sha: str, target: Path) -> bool:
    """Fetch one blob into ``target`` atomically, checking its hash; False when the blob is gone."""
    with atomic_path(target) as tmp:
        if not store.get_file(f"{prefix}/{BLOBS}/{sha}", tmp):
            return False
        got = file_sha256(tmp)
        if got != sha:
            raise StorageError(f"The object {prefix}/{BLOBS}/{sha} holds other bytes (SHA-256 {got}); refusing it.")
    return True


def pull_dir(store: ObjectStore, prefix: str, folder: Path, *, marker: Path, attempts: int = 3) -> dict[str, Any] | None:
    """Make ``folder`` hold the files of the manifest under ``prefix``; None when none was published.

    ``marker`` records the manifest last pulled into ``folder``: a file whose hash it lists and
    whose size matches is not downloaded again. A blob removed meanwhile (a newer manifest replaced
    the one read) makes it read the manifest again.
    """
    folder, marker = Path(folder), Path(marker)
    had: dict[str, Any] = {}
    if marker.is_file():
        try:
            had = json.loads(marker.read_text()).get("files", {})
        except (OSError, ValueError):
            had = {}
    for _attempt in range(attempts):
        manifest = read_manifest(store, prefix)
        if manifest is None:
            return None
        complete = True
        for rel, entry in sorted(manifest["files"].items()):
            target = _safe_target(folder, rel)
            sha, size = str(entry["sha256"]), int(entry["size"])
            if had.get(rel, {}).get("sha256") == sha and target.is_file() and target.stat().st_size == size:
                continue
            if not _download(store, prefix, sha, target):
                complete = False
                break
            had[rel] = {"sha256": sha, "size": size}
        if complete:
            atomic_write_json(marker, manifest)
            return manifest
    raise StorageError(f"{prefix} kept changing while it was downloaded ({attempts} tries); try again.")
