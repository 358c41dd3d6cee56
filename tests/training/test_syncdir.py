"""The folder <-> object storage protocol (training/syncdir.py) against moto's S3: blobs under
their hashes, the manifest written last, so a half-uploaded checkpoint is never read."""

from __future__ import annotations

import json
import shutil

import pytest

moto = pytest.importorskip("moto", reason="moto is not installed (requirements.txt)")

from training.objectstore import ObjectStore, StorageError, open_store, parse_storage_url  # noqa: E402
from training.syncdir import MANIFEST, manifest_bytes, pull_dir, push_dir, read_manifest  # noqa: E402


@pytest.fixture
def store(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        import boto3

        boto3.client("s3").create_bucket(Bucket="lab")
        yield open_store("s3://lab/team/breedlab")


def write_checkpoint(folder, step: int, weights: bytes) -> None:
    (folder / "checkpoint").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint" / f"last-{step % 2}.safetensors").write_bytes(weights)
    (folder / "checkpoint" / "last.json").write_text(json.dumps({"step": step, "weights": f"last-{step % 2}.safetensors"}))


def test_it_parses_storage_urls():
    assert parse_storage_url("/srv/breedlab") is None
    assert parse_storage_url("s3://lab/team/breedlab/") == parse_storage_url("s3://lab/team/breedlab")
    assert parse_storage_url("s3://lab").prefix == ""
    for bad in ("s3:///prefix", "gs://lab/x", "s3://lab/x?versionId=1"):
        with pytest.raises(ValueError):
            parse_storage_url(bad)


def test_a_pushed_folder_is_pulled_elsewhere_with_the_same_bytes(store, tmp_path):
    source, copy = tmp_path / "a", tmp_path / "b"
    write_checkpoint(source, 1, b"w1" * 1000)
    (source / "split.json").write_text("{}")
    (source / ".split.json.123.tmp").write_text("half")  # the atomic writer's temp file: never published
    manifest = push_dir(store, "runs/run-1", source)
    assert sorted(manifest["files"]) == ["checkpoint/last-1.safetensors", "checkpoint/last.json", "split.json"]
    assert pull_dir(store, "runs/run-1", copy, marker=tmp_path / "marker.json") == manifest
    assert (copy / "checkpoint" / "last-1.safetensors").read_bytes() == b"w1" * 1000
    assert not (copy / ".split.json.123.tmp").exists()
    # Keys live under the URL's prefix, each blob under its content's hash.
    keys = {name for name, _size in store.list("runs/run-1")}
    assert f"runs/run-1/{MANIFEST}" in keys and len([k for k in keys if "/blobs/" in k]) == 3
    assert store.size("runs/run-1") == manifest_bytes(manifest) + len(store.get_bytes(f"runs/run-1/{MANIFEST}"))


def test_a_crash_between_the_files_and_the_manifest_leaves_the_previous_checkpoint_readable(store, tmp_path, monkeypatch):
    worker, other = tmp_path / "worker", tmp_path / "other"
    write_checkpoint(worker, 1, b"epoch-1" * 100)
    push_dir(store, "runs/run-2", worker)
    write_checkpoint(worker, 2, b"epoch-2" * 100)

    real_put_bytes = store.put_bytes

    def crash_on_manifest(name, data):
        if name.endswith(MANIFEST):
            raise StorageError("the worker died here")
        return real_put_bytes(name, data)

    monkeypatch.setattr(store, "put_bytes", crash_on_manifest)
    with pytest.raises(StorageError):
        push_dir(store, "runs/run-2", worker)
    monkeypatch.undo()

    # The new blobs were uploaded, but nothing names them: the reader sees epoch 1 whole.
    assert len([k for k, _s in store.list("runs/run-2/blobs")]) == 4  # epoch 1: weights + json; epoch 2: the same
    pull_dir(store, "runs/run-2", other, marker=tmp_path / "m.json")
    assert json.loads((other / "checkpoint" / "last.json").read_text())["step"] == 1
    assert (other / "checkpoint" / "last-1.safetensors").read_bytes() == b"epoch-1" * 100
    assert not (other / "checkpoint" / "last-0.safetensors").exists()


def test_a_half_uploaded_checkpoint_is_never_read(store, tmp_path, monkeypatch):
    worker, other = tmp_path / "worker", tmp_path / "other"
    write_checkpoint(worker, 1, b"one" * 100)
    first = push_dir(store, "runs/run-3", worker)
    write_checkpoint(worker, 2, b"two" * 100)
    uploads = []
    real_put_file = store.put_file

    def die_after_one_upload(name, path):
        if uploads:
            raise StorageError("connection lost")
        uploads.append(name)
        return real_put_file(name, path)

    monkeypatch.setattr(store, "put_file", die_after_one_upload)
    with pytest.raises(StorageError):
        push_dir(store, "runs/run-3", worker)
    monkeypatch.undo()
    assert uploads and read_manifest(store, "runs/run-3") == first
    pull_dir(store, "runs/run-3", other, marker=tmp_path / "m.json")
    assert json.loads((other / "checkpoint" / "last.json").read_text())["step"] == 1

    # The next commit completes: the reader moves to step 2 and downloads only what changed.
    second = push_dir(store, "runs/run-3", worker)
    assert second["sequence"] == first["sequence"] + 1
    fetched = []
    real_get_file = store.get_file
    monkeypatch.setattr(store, "get_file", lambda name, path: fetched.append(name) or real_get_file(name, path))
    pull_dir(store, "runs/run-3", other, marker=tmp_path / "m.json")
    assert json.loads((other / "checkpoint" / "last.json").read_text())["step"] == 2
    assert len(fetched) == 2  # last.json and last-0; last-1 was already there


def test_blobs_only_old_manifests_name_are_pruned_but_the_previous_ones_stay(store, tmp_path):
    worker = tmp_path / "w"
    for step in (1, 2, 3):
        write_checkpoint(worker, step, f"weights-{step}".encode() * 50)
        (worker / "checkpoint" / f"last-{(step + 1) % 2}.safetensors").unlink(missing_ok=True)
        push_dir(store, "runs/run-4", worker)
    shas = {name.rsplit("/", 1)[-1] for name, _s in store.list("runs/run-4/blobs")}
    # Steps 2 and 3 (the current and previous manifest): two weights files, two last.json.
    assert len(shas) == 4


def test_a_last_upload_that_keeps_nothing_previous_leaves_only_its_own_blobs(store, tmp_path):
    worker = tmp_path / "w"
    write_checkpoint(worker, 1, b"checkpoint" * 50)
    push_dir(store, "runs/run-7", worker)
    shutil.rmtree(worker / "checkpoint")  # a finished run: its training checkpoint is gone
    (worker / "model.safetensors").write_bytes(b"final weights")
    final = push_dir(store, "runs/run-7", worker, extra={"final": True}, keep_previous=False)
    assert final["final"] is True and list(final["files"]) == ["model.safetensors"]
    assert store.size("runs/run-7/blobs") == len(b"final weights")


def test_a_blob_with_other_bytes_is_refused(store, tmp_path):
    source = tmp_path / "s"
    write_checkpoint(source, 1, b"good")
    manifest = push_dir(store, "runs/run-5", source)
    sha = manifest["files"]["checkpoint/last-1.safetensors"]["sha256"]
    store.put_bytes(f"runs/run-5/blobs/{sha}", b"evil")
    with pytest.raises(StorageError, match="other bytes"):
        pull_dir(store, "runs/run-5", tmp_path / "d", marker=tmp_path / "m.json")


def test_nothing_published_pulls_none_and_unsafe_manifest_paths_are_refused(store, tmp_path):
    assert pull_dir(store, "runs/none", tmp_path / "d", marker=tmp_path / "m.json") is None
    store.put_bytes("runs/evil/manifest.json", json.dumps(
        {"format": 1, "sequence": 1, "files": {"../../etc/passwd": {"sha256": "0" * 64, "size": 1}}}).encode())
    with pytest.raises(StorageError, match="unsafe"):
        pull_dir(store, "runs/evil", tmp_path / "d", marker=tmp_path / "m.json")


def test_deleting_a_prefix_frees_what_it_measured(store, tmp_path):
    source = tmp_path / "s"
    write_checkpoint(source, 1, b"x" * 5000)
    push_dir(store, "runs/run-6", source)
    push_dir(store, "runs/run-66", source)
    size = store.size("runs/run-6")
    assert size > 5000
    assert store.delete_prefix("runs/run-6") == size
    assert store.size("runs/run-6") == 0 and store.size("runs/run-66") == size  # "run-6/" is not "run-66/"


def test_a_store_without_the_bucket_fails_with_a_clear_error(store):
    missing = ObjectStore("no-such-bucket", "x")
    with pytest.raises(StorageError, match="no-such-bucket"):
        missing.put_bytes("a", b"1")
