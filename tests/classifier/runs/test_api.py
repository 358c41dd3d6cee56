"""The runs and models API: start (201), list, detail with epochs, cancel, promote, token auth, JSON errors."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import Client

from classifier.models import EpochMetric, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db
SPLIT = {"train": ["a/1.jpg"], "val": ["a/2.jpg"]}


@pytest.fixture
def token_client(staff_user, capsys):
    call_command("create_api_token", staff_user.username)
    token = capsys.readouterr().out.strip()
    return Client(HTTP_AUTHORIZATION=f"Token {token}")


def test_a_staff_token_starts_a_run_without_csrf(token_client, make_dataset, enqueued, django_capture_on_commit_callbacks):
    dataset = make_dataset(name="pets", split=SPLIT)
    with django_capture_on_commit_callbacks(execute=True):
        response = token_client.post(
            "/api/runs",
            {"dataset": "pets", "config": {"backbone": "cifar10_resnet20", "optimizer": "sgd", "head_epochs": 2}},
            content_type="application/json",
        )
    assert response.status_code == 201, response.content
    body = response.json()
    run = TrainingRun.objects.get(pk=body["id"])
    assert response["Location"] == f"/api/runs/{run.pk}"
    assert body["status"] == "queued" and body["dataset"]["id"] == dataset.pk and body["config"]["head_epochs"] == 2
    assert run.created_by.username == "staff" and [c["args"] for c in enqueued] == [[run.pk]]


def test_a_run_started_without_a_backbone_chooses_automatically(token_client, make_dataset, enqueued):
    make_dataset(name="pets", split=SPLIT)
    response = token_client.post("/api/runs", {"dataset": "pets", "config": {"optimizer": "sgd"}}, content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["config"]["backbone"] == "auto" and body["backbone"] == "auto" and body["backbone_auto"] is True
    response = token_client.post("/api/runs", {"dataset": "pets", "config": {"backbone": "vgg99"}}, content_type="application/json")
    assert response.status_code == 400 and response.json()["field"] == "backbone"
    assert "valid backbones are auto" in response.json()["error"]


def test_the_api_names_an_automatic_runs_choice_and_filters_by_it(client, make_run, make_dataset):
    chose = make_run(config={"backbone": "auto", "optimizer": "adam"}, status=TrainingRun.Status.SUCCEEDED,
                     result={"metrics": {"backbone": "efficientnet_lite2", "val_acc": 0.9}})
    waiting = make_run(config={"backbone": "auto", "optimizer": "adam"})
    named = make_run(config={"backbone": "efficientnet_lite2", "optimizer": "adam"})
    detail = client.get(f"/api/runs/{chose.pk}").json()
    assert detail["backbone"] == "efficientnet_lite2" and detail["backbone_auto"] is True
    assert detail["config"]["backbone"] == "auto" and detail["metrics"]["backbone"] == "efficientnet_lite2"

    def ids(query: str) -> set[int]:
        return {row["id"] for row in client.get(f"/api/runs?{query}").json()["results"]}

    assert ids("backbone=efficientnet_lite2") == {chose.pk, named.pk}
    assert ids("backbone=auto") == {chose.pk, waiting.pk}
    assert next(r for r in client.get("/api/runs").json()["results"] if r["id"] == waiting.pk)["backbone"] == "auto"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"dataset": "nope"}, "No dataset 'nope'"),
        ({"dataset": "pets", "config": {"optimizer": "lbfgs"}}, "Unknown optimizer 'lbfgs'"),
        ({"dataset": "pets", "config": {"batch_size": 0}}, "batch_size must be >= 1"),
        ({"dataset": "pets", "config": "fast"}, "config"),
        ({"dataset": "pets", "budget_minutes": 3}, 'Unknown field(s): budget_minutes; valid: dataset, config, '
         'promote_when_done. Run settings go inside "config", e.g. {"config": {"budget_minutes": ...}}.'),
        ({"dataset": "pets", "promote": True}, "Unknown field(s): promote; valid: dataset, config, promote_when_done."),
        ({}, "dataset"),
    ],
)
def test_invalid_requests_get_400_with_one_error(token_client, make_dataset, payload, message):
    make_dataset(name="pets", split=SPLIT)
    response = token_client.post("/api/runs", payload, content_type="application/json")
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not TrainingRun.objects.exists()


def test_a_dataset_with_problems_is_refused_with_the_reason(token_client, make_dataset):
    make_dataset(name="pets", split=SPLIT, report={"problems": ["Only one class."]})
    response = token_client.post("/api/runs", {"dataset": "pets"}, content_type="application/json")
    assert response.status_code == 400 and "Only one class." in response.json()["error"]


def test_the_list_and_the_detail_report_status_progress_and_epochs(client, make_run):
    run = make_run(status=TrainingRun.Status.RUNNING, progress=0.5, traceback="secret frames",
                   progress_detail={"stage": "train", "epoch": 1})
    EpochMetric.objects.create(run=run, phase="head", epoch=1, train_loss=1.0, val_acc=0.5)
    make_run(status=TrainingRun.Status.FAILED)
    listing = client.get("/api/runs?status=running").json()
    assert listing["count"] == 1 and listing["results"][0]["id"] == run.pk
    detail = client.get(f"/api/runs/{run.pk}").json()
    assert detail["progress"] == 0.5 and detail["progress_detail"]["stage"] == "train"
    assert detail["epochs"] == [{"phase": "head", "epoch": 1, "train_loss": 1.0, "train_acc": None, "val_loss": None,
                                 "val_acc": 0.5, "lr": None, "seconds": None}]
    assert detail["traceback"] == ""  # staff only
    assert client.get("/api/runs?status=exploded").status_code == 400
    assert client.get("/api/runs/999999").json() == {"error": "No training run #999999."}


def test_staff_see_the_traceback(token_client, make_run):
    run = make_run(status=TrainingRun.Status.FAILED, traceback="Traceback: frames")
    assert token_client.get(f"/api/runs/{run.pk}").json()["traceback"] == "Traceback: frames"


def test_cancel_over_the_api(token_client, make_run):
    run = make_run()
    response = token_client.post(f"/api/runs/{run.pk}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = token_client.post(f"/api/runs/{run.pk}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]


def test_models_are_listed_and_promoted_over_the_api(token_client, settings):
    folder = settings.RUNS_ROOT / "v1"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "meta.json").write_text("{}")
    version = ModelVersion.objects.create(name="v1", backbone="cifar10_resnet20", path="v1", metrics={"val_acc": 0.9})
    missing = ModelVersion.objects.create(name="v0", backbone="cifar10_resnet20", path="gone")
    assert [m["name"] for m in token_client.get("/api/models").json() if m["kind"] != "builtin"] == ["v0", "v1"]
    response = token_client.post(f"/api/models/{version.pk}/promote")
    assert response.status_code == 200 and response.json()["is_active"] is True and response.json()["promoted_by"] == "staff"
    refused = token_client.post(f"/api/models/{missing.pk}/promote")
    assert refused.status_code == 409 and "missing" in refused.json()["error"]


def test_the_openapi_schema_describes_the_runs_and_models_endpoints(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    for path in ("/api/runs", "/api/runs/{id}", "/api/runs/{id}/cancel", "/api/models", "/api/models/{id}/promote"):
        assert path in paths
    assert "post" in paths["/api/runs"] and "requestBody" in paths["/api/runs"]["post"]
    assert client.get("/api/docs/").status_code == 200


def test_create_api_token_refuses_users_who_are_not_staff(plain_user):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not an active staff user") as info:
        call_command("create_api_token", plain_user.username)
    assert info.value.returncode == 2
