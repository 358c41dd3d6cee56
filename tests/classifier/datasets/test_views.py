"""Dataset pages: the upload (hostile archives, permissions, size limit), the report, the photos."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from classifier.datasets import services
from classifier.models import Dataset, Feedback, Prediction
from tests.classifier.dataset_archives import (
    HOSTILE_CASES,
    Case,
    files_under,
    imagefolder_entries,
    jpeg_bytes,
    make_zip,
)

pytestmark = pytest.mark.django_db

NEW = "/datasets/new/"


def upload(client: Client, archive: Path, name: str = "dogs", **extra):
    with open(archive, "rb") as handle:
        return client.post(NEW, {"name": name, "archive": handle, "val_fraction": 0.2, "seed": 0, **extra})


def outside_snapshot(tmp_path: Path, datasets_root: Path) -> set[str]:
    """Everything under tmp_path except the datasets root and the uploads folder."""
    return {
        rel
        for rel in files_under(tmp_path)
        if not (tmp_path / rel).resolve().is_relative_to(datasets_root.resolve()) and not rel.startswith("uploads")
    }


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("case", HOSTILE_CASES, ids=[case.name for case in HOSTILE_CASES])
def test_upload_page_refuses_or_reports_each_odd_archive(staff_client, settings, tmp_path, uploads, case: Case):
    root = Path(settings.DATASETS_ROOT)
    archive = case.build(uploads)
    before_outside = outside_snapshot(tmp_path, root)
    response = upload(staff_client, archive, name=f"case {case.name}")
    dataset = Dataset.objects.get(name=f"case {case.name}")
    assert outside_snapshot(tmp_path, root) == before_outside, "something was written outside the dataset folder"
    assert not list(tmp_path.rglob("evil*")), "an entry escaped"
    if case.refused:
        assert response.status_code == 400
        assert case.refused in response.content.decode()
        assert dataset.error.startswith(archive.name), "the message names the uploaded file"
        assert dataset.status == Dataset.Status.FAILED and case.refused in dataset.error
        assert files_under(root) == set(), "a refused archive left files behind"
        return
    assert response.status_code == 302 and response["Location"] == dataset.get_absolute_url()
    assert dataset.status == Dataset.Status.READY
    assert dataset.classes == case.classes
    folder = root / dataset.path
    assert all((root / rel).resolve().is_relative_to(folder.resolve()) for rel in files_under(root) if "/" in rel)
    reasons = {item["path"]: item["reason"] for item in dataset.report["skipped"]}
    for path, reason in case.skipped.items():
        assert reasons.get(path) == reason
    for fragment in case.problems:
        assert any(fragment in problem for problem in dataset.problems)
    html = staff_client.get(dataset.get_absolute_url()).content.decode()
    for path in case.skipped:
        assert path in html
    if case.problems:
        assert "Training on this dataset is blocked" in html and f"/runs/new/?dataset={dataset.pk}" not in html


def test_nested_folders_are_flattened_into_their_class(staff_client, uploads):
    case = next(c for c in HOSTILE_CASES if c.name == "nested_folders")
    upload(staff_client, case.build(uploads), name="nested")
    dataset = Dataset.objects.get(name="nested")
    assert "beagle/2024__trip__000.jpg" in dataset.split["train"] + dataset.split["val"]
    assert dataset.report["source"]["stripped_root"] == "photos"


def test_anonymous_visitors_are_sent_to_log_in_and_nothing_is_imported(client, uploads, settings):
    archive = make_zip(uploads / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    assert client.get(NEW).status_code == 302
    response = upload(client, archive)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert not Dataset.objects.exists() and files_under(Path(settings.DATASETS_ROOT)) == set()


def test_signed_in_users_who_are_not_staff_get_403(client, plain_user, uploads):
    client.force_login(plain_user)
    archive = make_zip(uploads / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    assert client.get(NEW).status_code == 403
    assert upload(client, archive).status_code == 403
    assert not Dataset.objects.exists()


def test_uploads_without_a_csrf_token_are_refused(staff_user, uploads):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    archive = make_zip(uploads / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    assert upload(client, archive).status_code == 403
    assert not Dataset.objects.exists()
    page = client.get(NEW).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert upload(client, archive, csrfmiddlewaretoken=token).status_code == 302


def test_the_form_works_without_javascript_and_offers_the_progress_bar_with_it(staff_client):
    html = staff_client.get(NEW).content.decode()
    assert 'enctype="multipart/form-data"' in html and 'method="post"' in html
    assert "js/dataset-upload.js" in html and "<progress" in html
    assert 'id="upload-i18n"' in html


def test_an_xhr_upload_gets_json_with_the_new_page_or_the_reasons(staff_client, uploads):
    good = make_zip(uploads / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    with open(good, "rb") as handle:
        response = staff_client.post(
            NEW, {"name": "xhr", "archive": handle, "val_fraction": 0.2, "seed": 0}, headers={"x-requested-with": "XMLHttpRequest"}
        )
    assert response.status_code == 201
    assert response.json()["url"] == Dataset.objects.get(name="xhr").get_absolute_url()
    response = staff_client.post(NEW, {"name": "", "val_fraction": 2}, headers={"x-requested-with": "XMLHttpRequest"})
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"name", "archive", "val_fraction", "seed"}


def test_an_archive_over_the_limit_is_cut_off_with_a_clear_message(staff_client, settings, uploads):
    settings.BREEDLAB_MAX_ARCHIVE_BYTES = 20 * 1024
    archive = make_zip(uploads / "big.zip", imagefolder_entries({"beagle": 40, "pug": 40}))
    assert archive.stat().st_size > 40_000
    response = upload(staff_client, archive)
    assert response.status_code == 413
    assert "larger than 20.0 KB" in response.content.decode()
    assert not Dataset.objects.exists() and files_under(Path(settings.DATASETS_ROOT)) == set()


def test_a_real_upload_of_stanford_dogs_photos_shows_the_report_and_photos(staff_client, stanford_dogs_dir, tmp_path, settings):
    breeds = ("beagle", "pug", "samoyed")
    archive = tmp_path / "stanford.zip"
    with zipfile.ZipFile(archive, "w") as opened:  # stored: JPEGs do not compress
        for breed in breeds:
            for photo in sorted((stanford_dogs_dir / breed).iterdir()):
                opened.write(photo, f"stanford/{breed}/{photo.name}")
    response = upload(staff_client, archive, name="Stanford three")
    dataset = Dataset.objects.get(name="Stanford three")
    assert response.status_code == 302, response.content.decode()[:500]
    assert dataset.classes == list(breeds) and dataset.problems == []
    assert dataset.image_count == sum(len(list((stanford_dogs_dir / b).iterdir())) for b in breeds) - len(
        [item for item in dataset.report["skipped"] if item["reason"] != "archive"]
    )

    html = staff_client.get(dataset.get_absolute_url()).content.decode()
    assert reverse("classifier:dataset_chart", args=[dataset.pk]) in html
    assert f"/runs/new/?dataset={dataset.pk}" in html
    assert "Imbalance ratio" in html and "Train / validation" in html
    first = dataset.split["train"][0]
    assert reverse("classifier:dataset_thumbnail", args=[dataset.pk, first]) in html

    chart = staff_client.get(reverse("classifier:dataset_chart", args=[dataset.pk]))
    assert chart["Content-Type"] == "image/svg+xml" and b"<svg" in b"".join(chart.streaming_content)
    # A phone gets the narrow drawing (about the width it is shown at, so the letters stay readable).
    narrow_url = reverse("classifier:dataset_chart", args=[dataset.pk]) + "?layout=narrow"
    assert f'<source media="(max-width: 600px)" srcset="{narrow_url}">' in html
    narrow = b"".join(staff_client.get(narrow_url).streaming_content).decode()
    wide = b"".join(staff_client.get(reverse("classifier:dataset_chart", args=[dataset.pk])).streaming_content).decode()
    width = lambda svg: float(re.search(r'<svg[^>]*width="([\d.]+)pt"', svg).group(1))  # noqa: E731
    assert width(narrow) < 300 < 500 < width(wide)

    thumb = staff_client.get(reverse("classifier:dataset_thumbnail", args=[dataset.pk, first]))
    assert thumb.status_code == 200 and thumb["Content-Type"] == "image/jpeg"
    assert thumb["X-Content-Type-Options"] == "nosniff"
    cached = list((Path(settings.MEDIA_ROOT) / "cache").rglob("*.jpg"))
    assert len(cached) == 1, "the thumbnail is made once and cached under MEDIA_ROOT"
    from PIL import Image

    with Image.open(cached[0]) as image:
        assert max(image.size) <= services.THUMBNAIL_SIDE
    mtime = cached[0].stat().st_mtime_ns
    staff_client.get(reverse("classifier:dataset_thumbnail", args=[dataset.pk, first]))
    assert cached[0].stat().st_mtime_ns == mtime

    page_two = staff_client.get(dataset.get_absolute_url() + "?class=pug&page=2").content.decode()
    pug_files = sorted(p for p in dataset.split["train"] + dataset.split["val"] if p.startswith("pug/"))
    assert reverse("classifier:dataset_thumbnail", args=[dataset.pk, pug_files[24]]) in page_two
    assert reverse("classifier:dataset_thumbnail", args=[dataset.pk, pug_files[0]]) not in page_two


def make_ready_dataset(tmp_path: Path) -> Dataset:
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    return services.dataset_import_archive(name="dogs", archive_path=archive)


@pytest.mark.parametrize(
    "relpath",
    ["../../../../etc/passwd", "beagle/../../v1/beagle/000.jpg", "/etc/passwd", "beagle/missing.jpg", "beagle", "%2e%2e/x"],
)
def test_the_image_views_serve_only_the_datasets_own_photos(client, tmp_path, relpath, settings):
    settings.BREEDLAB_PUBLIC_DATASET_IMAGES = True  # private by default: made public to test the whitelist itself
    dataset = make_ready_dataset(tmp_path)
    for name in ("classifier:dataset_image", "classifier:dataset_thumbnail"):
        url = f"/datasets/{dataset.pk}/{'images' if name.endswith('image') else 'thumbs'}/{relpath}"
        assert client.get(url).status_code == 404, url


def test_a_file_placed_in_the_folder_after_import_is_not_served(client, tmp_path, settings):
    settings.BREEDLAB_PUBLIC_DATASET_IMAGES = True
    dataset = make_ready_dataset(tmp_path)
    folder = Path(settings.DATASETS_ROOT) / dataset.path
    (folder / "beagle" / "page.html").write_text("<script>alert(1)</script>")
    assert client.get(f"/datasets/{dataset.pk}/images/beagle/page.html").status_code == 404


def test_a_symlink_swapped_in_for_a_photo_is_not_followed(client, tmp_path, settings):
    settings.BREEDLAB_PUBLIC_DATASET_IMAGES = True
    dataset = make_ready_dataset(tmp_path)
    rel = dataset.split["train"][0]
    path = Path(settings.DATASETS_ROOT) / dataset.path / rel
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(jpeg_bytes(9))
    path.unlink()
    path.symlink_to(secret)
    assert client.get(f"/datasets/{dataset.pk}/images/{rel}").status_code == 404


def test_a_photo_is_served_with_an_image_type_and_nosniff(client, tmp_path, settings):
    settings.BREEDLAB_PUBLIC_DATASET_IMAGES = True
    dataset = make_ready_dataset(tmp_path)
    response = client.get(reverse("classifier:dataset_image", args=[dataset.pk, dataset.split["val"][0]]))
    assert response.status_code == 200
    assert response["Content-Type"] == "image/jpeg" and response["X-Content-Type-Options"] == "nosniff"


def test_photos_are_for_staff_only_by_default(staff_client, tmp_path):
    dataset = make_ready_dataset(tmp_path)
    url = reverse("classifier:dataset_thumbnail", args=[dataset.pk, dataset.split["val"][0]])
    assert Client().get(url).status_code == 403
    assert "Photos are shown to staff only" in Client().get(dataset.get_absolute_url()).content.decode()
    assert staff_client.get(url).status_code == 200


def test_the_list_links_each_dataset_and_flags_those_that_cannot_train(client, tmp_path, make_dataset):
    ready = make_ready_dataset(tmp_path)
    broken = make_dataset(name="broken", path="broken/v1", report={"problems": ["Found 1 class folder(s)."]})
    html = client.get("/datasets/").content.decode()
    assert f'href="{ready.get_absolute_url()}"' in html and f'href="{broken.get_absolute_url()}"' in html
    assert html.count("cannot train") == 1


def test_staff_merge_corrections_from_the_page_into_a_new_version(staff_client, tmp_path, settings):
    from django.core.files.base import ContentFile

    v1 = make_ready_dataset(tmp_path)
    prediction = Prediction.objects.create(top_label="pug", is_dog=True)
    prediction.image.save("p.jpg", ContentFile(jpeg_bytes(321)))
    Feedback.objects.create(prediction=prediction, correct_label="beagle", review=Feedback.Review.ACCEPTED)
    html = staff_client.get(v1.get_absolute_url()).content.decode()
    assert "Merge 1 correction into a new version" in html
    response = staff_client.post(reverse("classifier:dataset_merge", args=[v1.pk]))
    v2 = Dataset.objects.get(name="dogs", version=2)
    assert response.status_code == 302 and response["Location"] == v2.get_absolute_url()
    html = staff_client.get(v2.get_absolute_url()).content.decode()
    assert f'href="{v1.get_absolute_url()}"' in html  # "made from v1"
    assert "Merge 1 correction" not in staff_client.get(v1.get_absolute_url()).content.decode()


def test_visitors_see_no_staff_actions_and_cannot_post_them(client, tmp_path):
    dataset = make_ready_dataset(tmp_path)
    html = client.get(dataset.get_absolute_url()).content.decode()
    assert f"/runs/new/?dataset={dataset.pk}" not in html and "/merge/" not in html and "/delete/" not in html
    assert client.post(reverse("classifier:dataset_delete", args=[dataset.pk])).status_code == 302
    assert Dataset.objects.filter(pk=dataset.pk).exists()


def test_staff_delete_an_unused_dataset_but_not_one_a_run_uses(staff_client, tmp_path, settings, make_run):
    dataset = make_ready_dataset(tmp_path)
    run = make_run(dataset=dataset)
    response = staff_client.post(reverse("classifier:dataset_delete", args=[dataset.pk]), follow=True)
    assert "Runs use it" in response.content.decode()
    run.delete()
    response = staff_client.post(reverse("classifier:dataset_delete", args=[dataset.pk]), follow=True)
    assert "freed when the grace period ends" in response.content.decode()
    # Soft, like runs and model versions: gone from the list, files kept until the purge.
    assert Dataset.objects.get(pk=dataset.pk).deleted_at is not None
    assert dataset.name not in staff_client.get(reverse("classifier:dataset_list")).content.decode()
    assert files_under(Path(settings.DATASETS_ROOT)) != set()


def test_a_failed_import_shows_its_error(client, tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"../evil.jpg": jpeg_bytes(1)})
    with pytest.raises(services.DatasetError) as caught:
        services.dataset_import_archive(name="evil", archive_path=archive)
    html = client.get(caught.value.dataset.get_absolute_url()).content.decode()
    assert "The import failed" in html and "outside its folder" in html


def test_the_admin_add_button_leads_to_the_upload_page(staff_client):
    response = staff_client.get("/admin/classifier/dataset/add/")
    assert response.status_code == 302 and response["Location"] == NEW


def test_the_run_form_can_list_only_usable_datasets(tmp_path):
    from classifier.datasets import selectors
    good = make_ready_dataset(tmp_path)
    one_class = make_zip(tmp_path / "one.zip", imagefolder_entries({"beagle": 6}))
    bad = services.dataset_import_archive(name="one", archive_path=one_class)
    assert list(selectors.dataset_list_usable()) == [good]
    assert bad.problems


def test_a_small_upload_spooled_to_a_temporary_file_is_removed_afterwards(staff_client, tmp_path, settings):
    spool = tmp_path / "spool"
    spool.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(spool)
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # this archive streams to a temporary file
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    assert upload(staff_client, archive).status_code == 302
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024  # this one stays in memory and is spooled by us
    assert upload(staff_client, archive, name="dogs again").status_code == 302
    assert list(spool.iterdir()) == []
