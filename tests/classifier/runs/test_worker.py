"""Training runs end to end: a real Redis, real Celery worker processes, real photos, real training.

- a small run started through the API succeeds, shows up on the pages, is promoted and classifies;
- a run cancelled mid-run ends "cancelled" with its checkpoint;
- a worker killed with SIGKILL mid-run: the next worker's start-up reaper re-queues the run, which
  resumes from its last epoch; killed again, the heartbeat reaper fails it ("worker lost").
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from classifier.models import ModelVersion, TrainingRun
from tests.classifier.run_fixtures import TINY_CONFIG
from tests.classifier.worker_fixtures import WorkerGroup, wait_for, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
# Long enough to be mid-run whenever we look (about a second per epoch on a busy CPU).
LONG_CONFIG = {**TINY_CONFIG, "head_epochs": 1, "finetune_epochs": 400}


@pytest.fixture
def workers(broker, redis_url, tmp_path, settings):
    """Start real workers (``start(name)``); every one still alive is stopped at the end."""
    group = WorkerGroup(
        tmp_path,
        lambda name: worker_env(
            redis_url=redis_url,
            settings=settings,
            var_dir=tmp_path / "var",
            BREEDLAB_HEARTBEAT_TIMEOUT=4,  # heartbeats every second
            BREEDLAB_MAX_RUN_ATTEMPTS=2,
        ),
    )
    yield group.start
    group.stop_all()


@pytest.fixture
def api(staff_user, capsys):
    call_command("create_api_token", staff_user.username)
    return Client(HTTP_AUTHORIZATION=f"Token {capsys.readouterr().out.strip()}")


def start_run(api, dataset, config) -> int:
    response = api.post("/api/runs", {"dataset": dataset.pk, "config": config}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_a_small_run_succeeds_shows_up_is_promoted_and_classifies(workers, api, tiny_dataset, stanford_dogs_dir):
    worker = workers("e2e")
    # num_workers -1 (auto, the default): images are decoded by DataLoader processes started
    # from inside Celery's (daemonic) pool process.
    run_id = start_run(api, tiny_dataset, {**TINY_CONFIG, "num_workers": -1})

    def finished():
        body = api.get(f"/api/runs/{run_id}").json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    body = wait_for(finished, timeout=180, what="the run to finish", procs=[worker])
    assert body["status"] == "succeeded", body["error"] + "\n" + body["traceback"]
    assert [(e["phase"], e["epoch"]) for e in body["epochs"]] == [("head", 1), ("finetune", 1)]
    assert body["metrics"]["val_images"] == len(tiny_dataset.split["val"]) and body["progress"] == 1.0

    page = Client().get(f"/runs/{run_id}/").content.decode()
    assert "<svg" in page and f"/runs/{run_id}/curves.svg?n=2" in page
    assert Client().get(f"/runs/{run_id}/curves.svg?n=2").status_code == 200

    version_id = body["model_version"]
    assert api.post(f"/api/models/{version_id}/promote").json()["is_active"] is True
    assert f"run #{run_id}" in Client().get("/models/").content.decode()  # its display name

    photo = sorted((stanford_dogs_dir / "pug").iterdir())[-1]  # not among the 10 copied per breed
    with photo.open("rb") as fh:
        answer = Client().post("/api/predict", {"image": fh})
    assert answer.status_code == 200, answer.content
    result = answer.json()
    assert result["model"]["id"] == version_id
    assert {p["label"] for p in result["predictions"]} <= {"beagle", "chihuahua", "pug"}


def test_a_run_cancelled_mid_run_ends_cancelled_with_its_checkpoint(workers, api, tiny_dataset, settings):
    worker = workers("cancel")
    run_id = start_run(api, tiny_dataset, LONG_CONFIG)
    wait_for(lambda: TrainingRun.objects.get(pk=run_id).epochs.count() >= 2, timeout=180, what="two epochs", procs=[worker])
    assert api.post(f"/api/runs/{run_id}/cancel").json()["cancel_requested"] is True
    run = wait_for(
        lambda: (r := TrainingRun.objects.get(pk=run_id)).is_final and r, timeout=30, what="the cancel", procs=[worker]
    )
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.epochs.count() < 1 + LONG_CONFIG["finetune_epochs"]
    assert (Path(settings.RUNS_ROOT) / run.out_dir / "checkpoint" / "last.json").is_file()
    assert not ModelVersion.objects.filter(run_id=run_id).exists()


def test_a_killed_worker_is_reaped_the_run_resumes_and_a_second_loss_fails_it(workers, api, tiny_dataset):
    from classifier.runs.reaper import run_reap_stale

    first = workers("doomed")
    run_id = start_run(api, tiny_dataset, LONG_CONFIG)
    wait_for(lambda: TrainingRun.objects.get(pk=run_id).epochs.count() >= 3, timeout=180, what="three epochs", procs=[first])
    os.killpg(first.pid, signal.SIGKILL)  # the machine is gone: no chance to report anything
    first.wait(10)
    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == TrainingRun.Status.RUNNING and run.attempts == 1
    epochs_before = run.epochs.count()

    # A worker starting under the same name knows it runs nothing: its start-up reaper re-queues
    # the run at once (attempt 1 of 2), and the run resumes from its last saved epoch.
    second = workers("doomed")
    run = wait_for(
        lambda: (r := TrainingRun.objects.get(pk=run_id)).attempts == 2 and r.epochs.count() > epochs_before + 1 and r,
        timeout=180, what="the resumed attempt to train", procs=[second],
    )
    assert run.status == TrainingRun.Status.RUNNING
    rows = list(run.epochs.values_list("phase", "epoch"))
    assert len(rows) == len(set(rows))  # no epoch recorded twice
    assert ("finetune", 1) in rows and run.epochs.filter(phase="finetune").count() == max(e for p, e in rows if p == "finetune")
    first_new_log = second.log.read_text()
    assert "reaped runs" in first_new_log or "re-queued to resume" in first_new_log

    # Killed again: the periodic heartbeat reaper finds it stale and, with both attempts used, fails it.
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(10)
    time.sleep(2.5)
    assert run_reap_stale(timeout_seconds=2) == [run_id]
    run = TrainingRun.objects.get(pk=run_id)
    assert run.status == TrainingRun.Status.FAILED and run.error.startswith("Worker lost")
