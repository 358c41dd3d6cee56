"""Soft deletion of runs, dataset versions and model versions; the purge after the grace period frees
exactly the bytes the deletion announced; the storage page and API."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from classifier.models import Dataset, ModelVersion, TrainingRun
from classifier.storage import services
from classifier.storage.selectors import folder_bytes


def _fill(folder: Path, sizes=(1000, 25_000, 7)) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(sizes):
        (folder / f"f{i}.bin").write_bytes(os.urandom(n))
    return sum(sizes)


def _disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.fixture
def finished_run(make_run, settings):
    def make(**fields):
        run = make_run(status=TrainingRun.Status.SUCCEEDED, **fields)
        run.out_dir = f"run-{run.pk}"
        run.save(update_fields=["out_dir"])
        _fill(Path(settings.RUNS_ROOT) / run.out_dir)
        return run

    return make


def test_deleting_a_run_frees_the_space_it_says_after_the_grace_period(finished_run, settings):
    run = finished_run()
    version = ModelVersion.objects.create(run=run, name="v", backbone="efficientnet_lite0", path=run.out_dir)
    before = _disk(Path(settings.RUNS_ROOT))
    said = services.item_delete(obj=run)
    assert said == 26_007
    run.refresh_from_db()
    assert run.deleted_at is not None and ModelVersion.objects.get(pk=version.pk).deleted_at is not None
    from classifier.runs.selectors import run_list

    assert run not in run_list()
    assert services.purge_deleted() == {"run": 0, "model": 0, "dataset": 0, "bytes": 0}  # still in its grace period
    assert (Path(settings.RUNS_ROOT) / run.out_dir).is_dir()
    done = services.purge_deleted(now=timezone.now() + timedelta(hours=settings.BREEDLAB_DELETE_GRACE_HOURS + 1))
    assert done["run"] == 1 and done["bytes"] == said
    assert before - _disk(Path(settings.RUNS_ROOT)) == said
    assert not TrainingRun.objects.filter(pk=run.pk).exists() and not ModelVersion.objects.filter(pk=version.pk).exists()


def test_the_active_models_run_and_a_running_run_are_not_deleted(finished_run, make_run):
    run = finished_run()
    ModelVersion.objects.filter(is_active=True).update(is_active=False)
    ModelVersion.objects.create(run=run, name="v", backbone="efficientnet_lite0", path=run.out_dir, is_active=True)
    with pytest.raises(services.StorageError, match="serves now"):
        services.item_delete(obj=run)
    running = make_run(status=TrainingRun.Status.RUNNING)
    with pytest.raises(services.StorageError, match="queued or running"):
        services.item_delete(obj=running)
    assert not TrainingRun.objects.filter(deleted_at__isnull=False).exists()


def test_a_dataset_version_is_deleted_only_when_no_run_uses_it(make_dataset, finished_run, settings):
    dataset = make_dataset(path="dogs/v1")
    size = _fill(Path(settings.DATASETS_ROOT) / "dogs" / "v1")
    run = finished_run(dataset=dataset)
    with pytest.raises(services.StorageError, match=f"#{run.pk}"):
        services.item_delete(obj=dataset)
    services.item_delete(obj=run)
    assert services.item_delete(obj=dataset) == size
    from classifier.datasets.selectors import dataset_list

    assert dataset not in dataset_list()
    with pytest.raises(services.StorageError, match="dataset version is deleted"):
        services.item_restore(obj=TrainingRun.objects.get(pk=run.pk))
    settings.BREEDLAB_DELETE_GRACE_HOURS = 0
    done = services.purge_deleted()
    assert done["dataset"] == 1 and done["run"] == 1
    assert not (Path(settings.DATASETS_ROOT) / "dogs" / "v1").exists() and not Dataset.objects.filter(pk=dataset.pk).exists()


def test_model_versions_active_or_builtin_stay_an_imported_one_takes_its_folder_and_exports(db, settings, tmp_path):
    settings.BREEDLAB_SERVING_CACHE_DIR = tmp_path / "serving"
    builtin = ModelVersion.objects.get(kind=ModelVersion.Kind.BUILTIN)
    with pytest.raises(services.StorageError):
        services.item_delete(obj=builtin)
    imported = ModelVersion.objects.create(name="x (imported)", backbone="efficientnet_lite0", path="imported/1")
    size = _fill(Path(settings.RUNS_ROOT) / "imported" / "1")
    exports = tmp_path / "serving" / "exports"
    exports.mkdir(parents=True)
    (exports / f"model-{imported.pk}-0123abcd.zip").write_bytes(b"z" * 5000)
    (exports / f"model-{imported.pk + 1}-0123abcd.zip").write_bytes(b"other")
    size += 5000
    imported.is_active = True
    ModelVersion.objects.filter(is_active=True).update(is_active=False)
    imported.save()
    with pytest.raises(services.StorageError, match="serves now"):
        services.item_delete(obj=imported)
    ModelVersion.objects.filter(pk=imported.pk).update(is_active=False)
    imported.refresh_from_db()
    assert services.item_delete(obj=imported) == size
    from classifier.versions import services as version_services

    with pytest.raises(version_services.VersionError, match="deleted"):
        version_services.model_promote(version=ModelVersion.objects.get(pk=imported.pk))
    settings.BREEDLAB_DELETE_GRACE_HOURS = 0
    assert services.purge_deleted()["bytes"] == size
    assert not (Path(settings.RUNS_ROOT) / "imported" / "1").exists()
    assert [p.name for p in exports.iterdir()] == [f"model-{imported.pk + 1}-0123abcd.zip"]


def test_restore_within_the_grace_period_brings_it_back(finished_run):
    run = finished_run()
    version = ModelVersion.objects.create(run=run, name="v", backbone="efficientnet_lite0", path=run.out_dir)
    services.item_delete(obj=run)
    services.item_restore(obj=TrainingRun.objects.get(pk=run.pk))
    assert TrainingRun.objects.get(pk=run.pk).deleted_at is None
    assert ModelVersion.objects.get(pk=version.pk).deleted_at is None
    assert services.purge_deleted(now=timezone.now() + timedelta(days=365))["run"] == 0


def test_storage_api_and_page(staff_client, client, plain_user, finished_run, settings):
    run = finished_run()
    listing = staff_client.get("/api/storage")
    assert listing.status_code == 200
    item = next(i for i in listing.json()["items"] if i["kind"] == "run" and i["id"] == run.pk)
    assert item["bytes"] == folder_bytes(Path(settings.RUNS_ROOT) / run.out_dir) == 26_007
    page = staff_client.get("/storage/")
    assert page.status_code == 200 and f"#{run.pk}" in page.content.decode()
    response = staff_client.delete(f"/api/storage/run/{run.pk}")
    assert response.status_code == 200 and response.json()["bytes"] == 26_007
    again = staff_client.delete(f"/api/storage/run/{run.pk}")
    assert again.status_code == 409 and "already deleted" in again.json()["error"]
    assert staff_client.delete("/api/storage/thing/1").status_code == 404
    assert staff_client.post(f"/api/storage/run/{run.pk}/restore").json() == {"restored": True}
    page = staff_client.post(f"/storage/run/{run.pk}/delete/", follow=True)
    assert "Deleted;" in page.content.decode()
    client.force_login(plain_user)
    assert client.get("/api/storage").status_code == 403
    assert client.get("/storage/").status_code == 403


def test_the_periodic_purge_task_is_scheduled_and_purges(settings, finished_run):
    from classifier.storage.tasks import purge_deleted

    assert any(e["task"] == "classifier.tasks.purge_deleted" for e in settings.CELERY_BEAT_SCHEDULE.values())
    run = finished_run()
    services.item_delete(obj=run)
    settings.BREEDLAB_DELETE_GRACE_HOURS = 0
    assert purge_deleted()["run"] == 1
