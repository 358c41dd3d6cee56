"""Object storage for datasets and run folders: ``BREEDLAB_STORAGE_URL=s3://bucket/prefix``.

A thin layer over boto3 (no home-made S3 client): the bucket and a key prefix, and the few
operations the folder protocol (training/syncdir.py) needs. The endpoint and credentials come from
boto3's usual variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``), so any S3-compatible server works (AWS S3, MinIO, Ceph RGW, moto).

A local path (the default) needs none of this: every host reads the same folders (one machine, or
a shared mount), and ``open_store`` returns None.

Imports nothing of classifier/ or Django; boto3 is imported only when an S3 URL is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from training.errors import TrainingError
from training.files import atomic_path


class StorageError(TrainingError):
    """Object storage refused or failed an operation; the message says which and why."""


@dataclass(frozen=True)
class StorageUrl:
    """``s3://bucket/prefix`` split into its parts (``prefix`` without slashes at either end)."""

    bucket: str
    prefix: str


def parse_storage_url(url: str) -> StorageUrl | None:
    """The bucket and prefix of an ``s3://`` URL; None for a local path. ValueError when malformed."""
    url = (url or "").strip()
    if not url.lower().startswith("s3://"):
        if "://" in url:
            raise ValueError(f"{url!r} is neither a local path nor an s3://bucket/prefix URL.")
        return None
    parts = urlsplit(url)
    bucket = parts.netloc
    if not bucket or parts.query or parts.fragment:
        raise ValueError(f"{url!r} is not of the form s3://bucket/prefix.")
    return StorageUrl(bucket=bucket, prefix=parts.path.strip("/"))


def open_store(url: str, *, client: Any = None) -> ObjectStore | None:
    """An ObjectStore for an ``s3://`` URL, or None for a local path."""
    parsed = parse_storage_url(url)
    if parsed is None:
        return None
    return ObjectStore(parsed.bucket, parsed.prefix, client=client)


class ObjectStore:
    """Keys are relative to the URL's prefix ("runs/run-7/manifest.json"). Thread-safe (boto3
    clients are)."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if client is None:
            import boto3
            from botocore.config import Config

            # Endpoint, credentials and region come from the AWS_* variables boto3 reads itself.
            client = boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        self.client = client

    def __repr__(self) -> str:
        return f"ObjectStore(s3://{self.bucket}/{self.prefix})"

    def key(self, name: str) -> str:
        name = name.lstrip("/")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _relative(self, key: str) -> str:
        return key[len(self.prefix) + 1 :] if self.prefix else key

    # ---- single objects -----------------------------------------------------------------
    def put_bytes(self, name: str, data: bytes) -> None:
        self._call("write", name, self.client.put_object, Bucket=self.bucket, Key=self.key(name), Body=data)

    def get_bytes(self, name: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(name))
            return response["Body"].read()
        except Exception as exc:
            if _missing(exc):
                return None
            raise StorageError(f"Object storage could not read {self.key(name)} in bucket {self.bucket}: {exc}") from exc

    def put_file(self, name: str, path: Path) -> None:
        self._call("upload", name, self.client.upload_file, str(path), self.bucket, self.key(name))

    def get_file(self, name: str, path: Path) -> bool:
        """Download ``name`` into ``path`` atomically; False when there is no such object."""
        try:
            with atomic_path(path) as tmp:
                self.client.download_file(self.bucket, self.key(name), str(tmp))
        except Exception as exc:
            if _missing(exc):
                return False
            raise StorageError(f"Object storage could not download {self.key(name)} from bucket {self.bucket}: {exc}") from exc
        return True

    def exists(self, name: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except Exception as exc:
            if _missing(exc):
                return False
            raise StorageError(f"Object storage could not look up {self.key(name)} in bucket {self.bucket}: {exc}") from exc
        return True

    # ---- prefixes -----------------------------------------------------------------------
    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(name, size)`` of every object under ``prefix`` (a folder: a trailing slash is added)."""
        folder = self.key(prefix.strip("/")) + "/"
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
                for item in page.get("Contents", []):
                    yield self._relative(item["Key"]), int(item["Size"])
        except Exception as exc:
            raise StorageError(f"Object storage could not list {folder} in bucket {self.bucket}: {exc}") from exc

    def size(self, prefix: str) -> int:
        """Bytes the objects under ``prefix`` take in the bucket."""
        return sum(size for _name, size in self.list(prefix))

    def delete(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):  # DeleteObjects takes at most 1000 keys
            chunk = [{"Key": self.key(name)} for name in names[start : start + 1000]]
            response = self._call("delete", names[start], self.client.delete_objects, Bucket=self.bucket,
                                  Delete={"Objects": chunk, "Quiet": True})
            errors = (response or {}).get("Errors") or []
            if errors:
                raise StorageError(f"Object storage could not delete {errors[0].get('Key')}: {errors[0].get('Message')}")

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; returns the bytes they took."""
        items = list(self.list(prefix))
        self.delete([name for name, _size in items])
        return sum(size for _name, size in items)

    def _call(self, what: str, name: str, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            raise StorageError(f"Object storage could not {what} {self.key(name)} in bucket {self.bucket}: {exc}") from exc


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound"}

