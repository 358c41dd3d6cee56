"""classifier.datasets.services: imports, versions, merges of corrections, deletion."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from classifier.datasets import importing, selectors, services
from classifier.models import Dataset, Feedback, Prediction
from tests.classifier.dataset_archives import files_under, imagefolder_entries, jpeg_bytes, make_zip

pytestmark = pytest.mark.django_db


def write_folder(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    for rel, data in imagefolder_entries(counts, start=start).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


def test_it_imports_an_archive_with_report_classes_and_seeded_split(tmp_path, settings):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 10, "pug": 6}))
    dataset = services.dataset_import_archive(name="Dogs", archive_path=archive, seed=3, val_fraction=0.2)
    assert dataset.status == Dataset.Status.READY and dataset.error == ""
    assert dataset.path == "dogs/v1" and dataset.version == 1
    assert dataset.classes == ["beagle", "pug"] and dataset.image_count == 16
    assert dataset.report["problems"] == [] and "root" not in dataset.report and "usable_files" not in dataset.report
    assert dataset.report["source"]["format"] == "zip"
    assert len(dataset.split["val"]) == 2 + 1 and dataset.split["seed"] == 3 and dataset.split["val_fraction"] == 0.2
    assert len(dataset.split["test"]) == 2 + 1 and dataset.split["test_fraction"] == 0.15
    assert sorted(dataset.split["train"] + dataset.split["val"] + dataset.split["test"]) == sorted(
        p for p in files_under(Path(settings.DATASETS_ROOT) / "dogs/v1") if "/" in p
    )
    again = services.dataset_import_archive(name="Dogs", archive_path=archive, seed=3, val_fraction=0.2)
    assert again.split["val"] == dataset.split["val"], "the same seed must give the same split"
    assert (again.version, again.parent, again.path) == (2, dataset, "dogs/v2")
    assert selectors.dataset_list_usable().filter(pk=dataset.pk).exists()


def test_it_gives_different_names_with_the_same_slug_different_folders(tmp_path):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    first = services.dataset_import_archive(name="Dogs", archive_path=archive)
    second = services.dataset_import_archive(name="dogs!", archive_path=archive)
    assert first.path == "dogs/v1" and second.path == "dogs-2/v1"


def test_a_failed_import_keeps_the_error_on_the_row_and_leaves_no_folder(tmp_path, settings):
    archive = make_zip(tmp_path / "evil.zip", {**imagefolder_entries({"beagle": 5}), "../evil.jpg": jpeg_bytes(1)})
    with pytest.raises(services.DatasetError, match="outside its folder") as caught:
        services.dataset_import_archive(name="evil", archive_path=archive)
    row = caught.value.dataset
    assert row.status == Dataset.Status.FAILED and "outside its folder" in row.error
    assert files_under(Path(settings.DATASETS_ROOT)) == set()
    assert not selectors.dataset_list_usable().filter(pk=row.pk).exists()


def test_a_crash_after_extraction_removes_the_partial_folder(tmp_path, settings, monkeypatch):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(importing, "build_report", explode)
    with pytest.raises(services.DatasetError, match="unexpectedly") as caught:
        services.dataset_import_archive(name="dogs", archive_path=archive)
    assert caught.value.dataset.status == Dataset.Status.FAILED
    assert files_under(Path(settings.DATASETS_ROOT)) == set()


def test_it_refuses_archives_over_the_size_limit_before_extracting(tmp_path, settings):
    settings.BREEDLAB_MAX_ARCHIVE_BYTES = 2048
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    with pytest.raises(services.DatasetError, match="archives may be at most 2.0 KB"):
        services.dataset_import_archive(name="dogs", archive_path=archive)
    assert not Dataset.objects.exists()


def test_it_imports_a_server_folder_skipping_links_hidden_and_loose_files(tmp_path, settings):
    source = write_folder(tmp_path / "src", {"beagle": 5, "pug": 5})
    (source / "README.md").write_text("loose file")
    (source / "pug" / ".DS_Store").write_bytes(b"junk")
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_bytes(50))
    (source / "pug" / "link.jpg").symlink_to(secret)
    dataset = services.dataset_import_folder(name="dogs", source=source)
    reasons = {item["path"]: item["reason"] for item in dataset.report["skipped"]}
    assert reasons == {"README.md": "outside_class", "pug/.DS_Store": "hidden", "pug/link.jpg": "link"}
    folder = Path(settings.DATASETS_ROOT) / dataset.path
    assert not any(p.is_symlink() for p in folder.rglob("*"))
    assert dataset.image_count == 10


def test_it_refuses_to_import_a_folder_that_contains_the_datasets_root(settings):
    with pytest.raises(services.DatasetError, match="contains the datasets storage folder"):
        services.dataset_import_folder(name="all", source=Path(settings.DATASETS_ROOT).parent)


def test_a_dataset_with_problems_is_ready_but_not_usable(tmp_path):
    archive = make_zip(tmp_path / "one.zip", imagefolder_entries({"beagle": 3}))
    dataset = services.dataset_import_archive(name="tiny", archive_path=archive)
    assert dataset.status == Dataset.Status.READY
    assert any("at least two are needed" in problem for problem in dataset.problems)
    assert not selectors.dataset_list_usable().filter(pk=dataset.pk).exists()


def test_it_imports_real_stanford_dogs_photos(stanford_dogs_dir, tmp_path, settings):
    source = tmp_path / "three"
    for breed in ("beagle", "pug", "samoyed"):
        shutil.copytree(stanford_dogs_dir / breed, source / breed)
    dataset = services.dataset_import_folder(name="stanford-3", source=source)
    assert dataset.classes == ["beagle", "pug", "samoyed"]
    assert dataset.problems == []
    assert dataset.image_count == sum(len(list((source / b).iterdir())) for b in dataset.classes) - len(
        [s for s in dataset.report["skipped"]]
    )
    for breed in dataset.classes:
        val = [p for p in dataset.split["val"] if p.startswith(f"{breed}/")]
        test = [p for p in dataset.split["test"] if p.startswith(f"{breed}/")]
        train = [p for p in dataset.split["train"] if p.startswith(f"{breed}/")]
        assert len(val) == round((len(val) + len(train) + len(test)) * dataset.split["val_fraction"])
        assert len(test) == round((len(val) + len(train) + len(test)) * dataset.split["test_fraction"])


# Corrections merged into a new version -----------------------------------------------------------


def make_correction(label: str, seed: int, *, user=None, review=Feedback.Review.ACCEPTED) -> Feedback:
    prediction = Prediction.objects.create(top_label="pug", top_score=0.6, is_dog=True)
    prediction.image.save(f"photo-{seed}.jpg", ContentFile(jpeg_bytes(seed, size=(120, 100))))
    return Feedback.objects.create(prediction=prediction, correct_label=label, user=user, review=review)


def test_merging_corrections_makes_a_new_version_and_keeps_the_old_one_untouched(tmp_path, settings, make_run):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 6, "pug": 6}))
    v1 = services.dataset_import_archive(name="dogs", archive_path=archive, seed=5)
    run = make_run(dataset=v1)
    v1_folder = Path(settings.DATASETS_ROOT) / v1.path
    before_files = digests(v1_folder)
    before_row = Dataset.objects.values().get(pk=v1.pk)

    good = [make_correction("Beagle", 500), make_correction("pug", 501), make_correction("golden retriever", 502)]
    unknown = make_correction("husky", 503)
    unreviewed = make_correction("beagle", 504, review=Feedback.Review.PENDING)
    rejected = make_correction("pug", 505, review=Feedback.Review.REJECTED)
    v2 = services.dataset_merge_feedback(dataset=v1)

    assert (v2.name, v2.version, v2.parent_id, v2.status) == ("dogs", 2, v1.pk, Dataset.Status.READY)
    assert v2.image_count == 14  # "golden retriever" and "husky" are not classes of this dataset
    assert digests(v1_folder) == before_files
    assert Dataset.objects.values().get(pk=v1.pk) == before_row
    run.refresh_from_db()
    assert run.dataset_id == v1.pk
    # Files from v1 keep their side of the split; the new ones are split too.
    assert set(v1.split["val"]) <= set(v2.split["val"]) and set(v1.split["train"]) <= set(v2.split["train"])
    added = {f"beagle/correction-{good[0].pk}.jpg", f"pug/correction-{good[1].pk}.jpg"}
    assert added <= set(v2.split["train"]) | set(v2.split["val"])
    assert {entry["path"] for entry in v2.report["source"]["added"]} == added
    assert set(Feedback.objects.filter(merged_into=v2).values_list("pk", flat=True)) == {good[0].pk, good[1].pk}
    assert Feedback.objects.get(pk=unknown.pk).merged_into is None
    assert Feedback.objects.filter(pk__in=[unreviewed.pk, rejected.pk], merged_into__isnull=True).count() == 2
    with pytest.raises(services.DatasetError, match="no unmerged corrections"):
        services.dataset_merge_feedback(dataset=v1)


def test_deleting_refuses_a_dataset_a_run_uses_and_soft_deletes_an_unused_one_until_the_purge(tmp_path, settings, make_run):
    from datetime import timedelta

    from django.utils import timezone

    from classifier.datasets.selectors import dataset_list
    from classifier.storage.services import purge_deleted

    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    used = services.dataset_import_archive(name="used", archive_path=archive)
    make_run(dataset=used)
    with pytest.raises(services.DatasetError, match="Runs use it"):
        services.dataset_delete(dataset=used)
    assert (Path(settings.DATASETS_ROOT) / used.path).is_dir()

    unused = services.dataset_import_archive(name="unused", archive_path=archive)
    folder = Path(settings.DATASETS_ROOT) / unused.path
    size = services.dataset_delete(dataset=unused)
    assert size > 0
    # Soft: it leaves the lists at once, its files stay for the grace period.
    assert Dataset.objects.get(pk=unused.pk).deleted_at is not None and unused not in dataset_list()
    assert folder.is_dir()
    with pytest.raises(services.DatasetError, match="already deleted"):
        services.dataset_delete(dataset=unused)
    assert purge_deleted()["dataset"] == 0  # within the grace period
    done = purge_deleted(now=timezone.now() + timedelta(hours=settings.BREEDLAB_DELETE_GRACE_HOURS, minutes=1))
    assert done["dataset"] == 1 and done["bytes"] == size
    assert not Dataset.objects.filter(pk=unused.pk).exists()
    assert not (Path(settings.DATASETS_ROOT) / "unused").exists()


def test_the_reaper_fails_imports_interrupted_long_ago_and_removes_their_partial_folders(tmp_path, settings):
    from datetime import timedelta

    from django.utils import timezone

    from classifier.datasets.tasks import reap_interrupted_imports

    settings.BREEDLAB_IMPORT_TIMEOUT = 3600
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 3, "pug": 3}))
    ready = services.dataset_import_archive(name="Ready", archive_path=archive)
    stuck = Dataset.objects.create(name="Stuck", version=1, path="stuck/v1", status=Dataset.Status.IMPORTING)
    running = Dataset.objects.create(name="Running", version=1, path="running/v1", status=Dataset.Status.IMPORTING)
    for row in (stuck, running):
        partial = selectors.dataset_folder(row) / "beagle"
        partial.mkdir(parents=True)
        (partial / "1.jpg").write_bytes(jpeg_bytes())
    long_ago = timezone.now() - timedelta(seconds=3601)
    Dataset.objects.filter(pk__in=[stuck.pk, ready.pk]).update(created_at=long_ago)

    assert reap_interrupted_imports() == [stuck.pk]

    stuck.refresh_from_db()
    assert stuck.status == Dataset.Status.FAILED and "interrupted" in stuck.error
    assert not selectors.dataset_folder(stuck).exists() and not (Path(settings.DATASETS_ROOT) / "stuck").exists()
    running.refresh_from_db()
    assert running.status == Dataset.Status.IMPORTING and selectors.dataset_folder(running).is_dir()
    ready.refresh_from_db()
    assert ready.status == Dataset.Status.READY and selectors.dataset_folder(ready).is_dir()
    assert services.dataset_reap_interrupted() == []  # nothing twice
