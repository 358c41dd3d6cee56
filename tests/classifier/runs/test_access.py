"""Who may start, cancel, re-run and promote: anonymous -> login or 401/403, non-staff -> 403, no CSRF -> 403."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from classifier.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def targets(make_run, make_dataset, settings):
    """A queued run, a ready dataset and a promotable version: every write endpoint has something to act on."""
    dataset = make_dataset(name="pets", split={"train": ["a/1.jpg"], "val": ["a/2.jpg"]})
    run = make_run(dataset=dataset, config={"backbone": "cifar10_resnet20", "optimizer": "adam"})
    folder = Path(settings.RUNS_ROOT) / "v1"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "meta.json").write_text("{}")
    version = ModelVersion.objects.create(run=run, name="v1", backbone="cifar10_resnet20", path="v1")
    return {"run": run, "dataset": dataset, "version": version}


def page_writes(t):
    run, version = t["run"], t["version"]
    return [
        ("/runs/new/", {"dataset": t["dataset"].pk}),
        (f"/runs/{run.pk}/cancel/", {}),
        (f"/runs/{run.pk}/rerun/", {}),
        (f"/runs/{run.pk}/promote/", {}),
        (f"/models/{version.pk}/promote/", {}),
        ("/models/rollback/", {}),
    ]


def api_writes(t):
    run, version = t["run"], t["version"]
    return [
        ("/api/runs", {"dataset": t["dataset"].pk, "config": {}}),
        (f"/api/runs/{run.pk}/cancel", {}),
        (f"/api/models/{version.pk}/promote", {}),
        ("/api/models/rollback", {}),
    ]


def assert_nothing_changed(t):
    run = TrainingRun.objects.get(pk=t["run"].pk)
    assert TrainingRun.objects.count() == 1 and run.status == TrainingRun.Status.QUEUED and not run.cancel_requested
    assert list(ModelVersion.objects.filter(is_active=True).values_list("kind", flat=True)) == ["builtin"]


def test_anonymous_visitors_are_sent_to_log_in_and_change_nothing(targets, enqueued):
    client = Client()
    assert client.get("/runs/new/").status_code == 302
    for url, data in page_writes(targets):
        response = client.post(url, data)
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url
    for url, data in api_writes(targets):
        response = client.post(url, data, content_type="application/json")
        assert response.status_code in (401, 403), url
        assert "error" in response.json()
    assert_nothing_changed(targets)


def test_signed_in_users_who_are_not_staff_get_403(targets, plain_user, enqueued):
    client = Client()
    client.force_login(plain_user)
    assert client.get("/runs/new/").status_code == 403
    for url, data in page_writes(targets):
        assert client.post(url, data).status_code == 403, url
    for url, data in api_writes(targets):
        response = client.post(url, data, content_type="application/json")
        assert response.status_code == 403, url
    assert_nothing_changed(targets)


def test_staff_posts_without_a_csrf_token_are_refused(targets, staff_user, enqueued):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    for url, data in page_writes(targets):
        assert client.post(url, data).status_code == 403, url
    for url, data in api_writes(targets):
        response = client.post(url, json.dumps(data), content_type="application/json")
        assert response.status_code == 403 and "CSRF" in response.json()["error"], url
    assert_nothing_changed(targets)


def test_staff_posts_with_the_csrf_token_are_accepted(targets, staff_user, enqueued):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    client.get("/runs/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = client.post(f"/runs/{targets['run'].pk}/cancel/", {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert TrainingRun.objects.get(pk=targets["run"].pk).status == TrainingRun.Status.CANCELLED


def test_the_write_endpoints_refuse_get(targets, staff_client):
    run = targets["run"]
    for url in (f"/runs/{run.pk}/cancel/", f"/runs/{run.pk}/rerun/", f"/runs/{run.pk}/promote/", "/models/rollback/"):
        assert staff_client.get(url).status_code == 405, url
    assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.QUEUED
