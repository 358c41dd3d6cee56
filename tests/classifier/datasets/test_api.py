"""/api/datasets: list, report, and archive import with a staff token."""

from __future__ import annotations

from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from classifier.datasets import services
from classifier.models import Dataset
from tests.classifier.dataset_archives import HOSTILE_CASES, Case, files_under, imagefolder_entries, make_zip

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_api(staff_user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff_user).key}")
    return client


def post_archive(client: APIClient, archive: Path, name: str = "dogs", **extra):
    with open(archive, "rb") as handle:
        return client.post("/api/datasets", {"name": name, "archive": handle, **extra}, format="multipart")


def test_it_lists_datasets_with_their_counts(client, tmp_path):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 6}))
    dataset = services.dataset_import_archive(name="dogs", archive_path=archive)
    response = client.get("/api/datasets")
    assert response.status_code == 200
    assert response.json() == [
        {
            "id": dataset.pk,
            "name": "dogs",
            "version": 1,
            "classes": ["beagle", "pug"],
            "images": 11,
            "status": "ready",
            "usable": True,
        }
    ]


def test_it_returns_one_datasets_validation_report(client, tmp_path):
    archive = make_zip(tmp_path / "dogs.zip", {**imagefolder_entries({"beagle": 5, "pug": 5}), "pug/notes.txt": b"x"})
    dataset = services.dataset_import_archive(name="dogs", archive_path=archive, seed=4)
    body = client.get(f"/api/datasets/{dataset.pk}").json()
    assert body["report"]["skipped"][0]["path"] == "pug/notes.txt"
    assert body["report"]["imbalance_ratio"] == 1.0 and body["report"]["problems"] == []
    assert body["split"] == {"train": 6, "val": 2, "test": 2, "seed": 4, "val_fraction": 0.15, "test_fraction": 0.15}
    missing = client.get("/api/datasets/999999")
    assert missing.status_code == 404 and missing.json() == {"error": "No such dataset."}


def test_a_staff_token_imports_an_archive_and_gets_201_with_the_id(staff_api, tmp_path):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    response = post_archive(staff_api, archive, name="api dogs", seed=7, val_fraction=0.4)
    assert response.status_code == 201, response.json()
    dataset = Dataset.objects.get(pk=response.json()["id"])
    assert (dataset.name, dataset.status, dataset.split["seed"], dataset.split["val_fraction"]) == ("api dogs", "ready", 7, 0.4)
    assert response.json()["report"]["total_images"] == 10


@pytest.mark.parametrize("case", HOSTILE_CASES, ids=[case.name for case in HOSTILE_CASES])
def test_the_api_refuses_or_reports_each_odd_archive(staff_api, settings, tmp_path, case: Case):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    root = Path(settings.DATASETS_ROOT)
    response = post_archive(staff_api, case.build(uploads), name=f"api {case.name}")
    assert not list(tmp_path.rglob("evil*"))
    if case.refused:
        assert response.status_code == 400
        body = response.json()
        assert case.refused in body["error"]
        assert Dataset.objects.get(pk=body["id"]).status == Dataset.Status.FAILED
        assert files_under(root) == set()
        return
    assert response.status_code == 201
    body = response.json()
    assert body["classes"] == case.classes
    reasons = {item["path"]: item["reason"] for item in body["report"]["skipped"]}
    assert all(reasons.get(path) == reason for path, reason in case.skipped.items())
    assert all(any(fragment in p for p in body["report"]["problems"]) for fragment in case.problems)
    assert body["usable"] is not bool(case.problems)
    folder = (root / Dataset.objects.get(pk=body["id"]).path).resolve()
    assert all((root / rel).resolve().is_relative_to(folder) for rel in files_under(root) if "/" in rel)


def test_it_reports_missing_fields_as_one_error(staff_api):
    response = staff_api.post("/api/datasets", {"name": "x"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"].startswith("archive:")


def test_an_archive_over_the_limit_gets_413(staff_api, settings, tmp_path):
    settings.BREEDLAB_MAX_ARCHIVE_BYTES = 10 * 1024
    archive = make_zip(tmp_path / "big.zip", imagefolder_entries({"beagle": 30, "pug": 30}))
    response = post_archive(staff_api, archive)
    assert response.status_code == 413
    assert "larger than 10.0 KB" in response.json()["error"]
    assert not Dataset.objects.exists()


def test_it_refuses_imports_without_a_token_or_from_non_staff(plain_user, tmp_path):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    anonymous = APIClient()
    response = post_archive(anonymous, archive)
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token" and "error" in response.json()
    visitor = APIClient()
    visitor.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=plain_user).key}")
    response = post_archive(visitor, archive)
    assert response.status_code == 403 and response.json() == {"error": "Only staff may import datasets."}
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert post_archive(bad, archive).status_code == 401
    assert not Dataset.objects.exists()


def test_a_browser_session_needs_csrf_to_import(staff_user, tmp_path):
    archive = make_zip(tmp_path / "dogs.zip", imagefolder_entries({"beagle": 5, "pug": 5}))
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(staff_user)
    response = post_archive(client, archive)
    assert response.status_code == 403 and "CSRF" in response.json()["error"]
    assert not Dataset.objects.exists()


def test_the_endpoints_are_in_the_openapi_schema(client):
    schema = client.get("/api/openapi.json").json()
    assert {"get", "post"} <= set(schema["paths"]["/api/datasets"])
    assert "get" in schema["paths"]["/api/datasets/{id}"]
    post = schema["paths"]["/api/datasets"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"201", "400", "413"} <= set(post["responses"])
