"""Datasets, run folders and model versions in object storage (BREEDLAB_STORAGE_URL=s3://...),
against moto's S3 server over HTTP: published at import, read on another host from the bucket
alone, and the storage page's sizes are what deleting frees in the bucket."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from classifier.datasets import services as dataset_services
from classifier.datasets.selectors import dataset_folder
from classifier.models import Dataset
from classifier.storage import remote
from classifier.storage.selectors import item_bytes, storage_roots
from classifier.storage.services import purge_deleted
from tests.classifier.dataset_archives import imagefolder_entries, make_zip

pytestmark = pytest.mark.django_db


def import_dogs(tmp_path: Path, name: str = "dogs") -> Dataset:
    archive = make_zip(tmp_path / f"{name}.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    return dataset_services.dataset_import_archive(name=name, archive_path=archive)


def other_host(settings, tmp_path: Path, name: str) -> None:
    """Point this process at another host's empty caches (the bucket is all they share)."""
    host = tmp_path / name
    settings.BREEDLAB_STORAGE_CACHE_DIR = host / "cache"
    settings.DATASETS_ROOT = host / "cache" / "datasets"
    settings.RUNS_ROOT = host / "cache" / "runs"


def test_an_imported_dataset_version_is_in_the_bucket_and_another_host_downloads_it_once(s3_storage, settings, tmp_path, monkeypatch):
    dataset = import_dogs(tmp_path)
    assert dataset.status == Dataset.Status.READY
    published = remote.published_files(remote.DATASETS, dataset.path)
    assert sorted(published) == sorted(f for part in ("train", "val", "test") for f in dataset.split[part])
    assert s3_storage.bytes_under(f"site/datasets/{dataset.path}/blobs/") == sum(e["size"] for e in published.values())

    other_host(settings, tmp_path, "worker")
    fetched = []
    real_get_file = remote.store().get_file
    monkeypatch.setattr(remote.store(), "get_file", lambda name, path: fetched.append(name) or real_get_file(name, path))
    folder = dataset_folder(dataset)
    assert folder.is_relative_to(Path(settings.DATASETS_ROOT).resolve())
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == sorted(published)
    assert len(fetched) == len(published)
    dataset_folder(dataset)  # a version never changes: the second use downloads nothing
    assert len(fetched) == len(published)


def test_dataset_pages_on_a_host_that_has_only_the_bucket_show_thumbnails_and_charts(s3_storage, settings, tmp_path, staff_client):
    dataset = import_dogs(tmp_path)
    shutil.rmtree(settings.DATASETS_ROOT)  # the importing host is gone
    other_host(settings, tmp_path, "web2")
    settings.MEDIA_ROOT = tmp_path / "web2" / "media"
    first = dataset.split["train"][0]
    page = staff_client.get(dataset.get_absolute_url())
    assert page.status_code == 200
    thumb = staff_client.get(reverse("classifier:dataset_thumbnail", args=[dataset.pk, first]))
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    chart = staff_client.get(reverse("classifier:dataset_chart", args=[dataset.pk]))
    assert chart.status_code == 200 and b"<svg" in b"".join(chart.streaming_content)


def test_the_storage_page_shows_bucket_sizes_and_deleting_frees_what_it_said(s3_storage, settings, tmp_path, staff_client):
    dataset = import_dogs(tmp_path)
    keep = import_dogs(tmp_path, "keep")
    in_bucket = s3_storage.bytes_under(f"site/datasets/{dataset.path}/")
    assert in_bucket > 0 and item_bytes(dataset) == in_bucket  # what the bucket holds, listed

    page = staff_client.get(reverse("classifier:storage")).content.decode()
    assert "bucket: datasets" in page and s3_storage.url in page
    assert dict((name, size) for name, _path, size in storage_roots())["bucket: datasets"] == s3_storage.bytes_under("site/datasets/")

    # Another host (its cache is empty) deletes and purges: the bucket frees exactly that much.
    shutil.rmtree(settings.DATASETS_ROOT)
    other_host(settings, tmp_path, "web2")
    before = s3_storage.bytes_under("site/")
    said = dataset_services.dataset_delete(dataset=dataset)
    assert said == in_bucket
    assert s3_storage.bytes_under("site/") == before  # soft: nothing goes before the grace period
    done = purge_deleted(now=timezone.now() + timedelta(hours=settings.BREEDLAB_DELETE_GRACE_HOURS, minutes=1))
    assert done["dataset"] == 1 and done["bytes"] == said
    assert before - s3_storage.bytes_under("site/") == said
    assert s3_storage.bytes_under(f"site/datasets/{dataset.path}/") == 0
    assert remote.published_files(remote.DATASETS, keep.path)  # its neighbour is untouched


def test_an_upload_that_fails_fails_the_import_with_a_clear_error(s3_storage, tmp_path, monkeypatch):
    from training.objectstore import StorageError

    def refuse(*args, **kwargs):
        raise StorageError("Object storage could not upload ...: AccessDenied")

    monkeypatch.setattr(remote.store(), "put_file", refuse)
    with pytest.raises(dataset_services.DatasetError, match="could not be uploaded to object storage"):
        import_dogs(tmp_path)
    failed = Dataset.objects.get(name="dogs")
    assert failed.status == Dataset.Status.FAILED and "AccessDenied" in failed.error


def test_a_local_storage_url_keeps_todays_folders(settings):
    assert settings.BREEDLAB_STORAGE_S3 is None and remote.store() is None
    assert remote.local(remote.RUNS, "run-1") == Path(settings.RUNS_ROOT) / "run-1"
    assert remote.publish(remote.RUNS, "run-1") is None and remote.stored_bytes(remote.RUNS, "run-1") is None


@pytest.mark.slow
def test_model_versions_serve_export_and_import_on_a_host_that_has_only_the_bucket(
    s3_storage, settings, tmp_path, staff_client, finetuned_run, register_version, held_out_photos, fresh_serving
):
    import io
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    from classifier.serving import cache as inference

    version = register_version(finetuned_run)  # host 1 (where the run trained) publishes its folder
    assert remote.publish(remote.RUNS, version.path, final=True)["final"] is True
    photo = held_out_photos["pug"][-1]

    def top5() -> list[str]:
        upload = SimpleUploadedFile(photo.name, photo.read_bytes(), content_type="image/jpeg")
        response = staff_client.post("/api/predict", {"image": upload, "top_k": "5"})
        assert response.status_code == 200, response.content
        return [p["label"] for p in response.json()["predictions"]]

    before = top5()
    other_host(settings, tmp_path, "web2")
    settings.BREEDLAB_SERVING_CACHE_DIR = tmp_path / "web2" / "serving"
    inference.reset_current()
    assert top5() == before  # downloaded into this host's cache on first use
    assert (Path(settings.RUNS_ROOT) / version.path / "model.safetensors").is_file()

    response = staff_client.get(f"/api/models/{version.pk}/export")
    assert response.status_code == 200, response.content[:300]
    archive = b"".join(response.streaming_content)
    assert zipfile.is_zipfile(io.BytesIO(archive))

    # An import on this host goes to the bucket too: a third host serves it.
    response = staff_client.post("/api/models/import", {"archive": SimpleUploadedFile("m.zip", archive)})
    assert response.status_code == 201, response.content
    imported = response.json()["id"]
    assert "model.safetensors" in remote.published_files(remote.RUNS, f"imported/{imported}")
    other_host(settings, tmp_path, "web3")
    settings.BREEDLAB_SERVING_CACHE_DIR = tmp_path / "web3" / "serving"
    inference.reset_current()
    assert staff_client.post(f"/api/models/{imported}/promote").status_code == 200
    assert top5() == before


def test_a_model_version_whose_files_cannot_be_downloaded_is_refused_with_the_reason(s3_storage, staff_client):
    from classifier.models import ModelVersion

    version = ModelVersion.objects.create(name="broken", backbone="cifar10_resnet20", path="run-99", class_names=["a", "b"])
    remote.store().put_bytes("runs/run-99/manifest.json", b"{not json")
    response = staff_client.post(f"/api/models/{version.pk}/promote")
    assert response.status_code == 409  # like every promotion the version's state refuses
    assert "cannot be downloaded from object storage" in response.json()["error"]
    assert not ModelVersion.objects.get(pk=version.pk).is_active
