"""An S3-compatible server for the object-storage tests: moto's standalone server (a real HTTP S3
API on 127.0.0.1, in a thread of this process), a bucket, and this process configured to use it."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "breedlab-test"


@dataclass
class S3Server:
    endpoint: str
    url: str  # BREEDLAB_STORAGE_URL

    @property
    def env(self) -> dict[str, str]:
        """The variables every process that uses the bucket gets (boto3 reads them itself)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "BREEDLAB_STORAGE_URL": self.url,
        }

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def bytes_under(self, prefix: str) -> int:
        """What the bucket holds under ``prefix`` (listed by this test, not by the code under test)."""
        paginator = self.client().get_paginator("list_objects_v2")
        return sum(item["Size"] for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix) for item in page.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3_server():
    """moto's S3 server on a free local port with an empty bucket."""
    import logging

    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed (requirements.txt)")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3Server(endpoint=f"http://127.0.0.1:{port}", url=f"s3://{BUCKET}/site")
    try:
        s3.client().create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3_storage(s3_server, settings, monkeypatch, tmp_path):
    """This process (the web process) stores datasets and runs in the bucket; its own caches live
    under ``tmp_path/web``."""
    from training.objectstore import parse_storage_url

    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    web = Path(tmp_path) / "web"
    settings.BREEDLAB_STORAGE_URL = s3_server.url
    settings.BREEDLAB_STORAGE_S3 = parse_storage_url(s3_server.url)
    settings.BREEDLAB_STORAGE_CACHE_DIR = web / "cache" / "storage"
    settings.DATASETS_ROOT = web / "cache" / "storage" / "datasets"
    settings.RUNS_ROOT = web / "cache" / "storage" / "runs"
    settings.BREEDLAB_SERVING_CACHE_DIR = web / "cache" / "serving"
    for folder in (settings.DATASETS_ROOT, settings.RUNS_ROOT):
        Path(folder).mkdir(parents=True)
    return s3_server
