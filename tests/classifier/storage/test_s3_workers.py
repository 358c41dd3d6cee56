"""The object-storage path end to end: dataset import -> train -> promote -> classify, with an
S3-compatible server (moto's, over HTTP) and two real Celery workers that share nothing but the
bucket, the database and the broker (each has its own caches, media and var folders; so does this
test process, the web process).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from classifier.datasets import services as dataset_services
from classifier.models import ModelVersion, TrainingRun
from classifier.storage import services as storage_services
from tests.classifier.run_fixtures import TINY_CONFIG, copy_tiny_dataset
from tests.classifier.worker_fixtures import WorkerGroup, wait_for, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def host_dirs(root: Path) -> dict[str, Path]:
    """Everything one host keeps for itself."""
    return {
        "BREEDLAB_STORAGE_CACHE_DIR": root / "cache",
        "BREEDLAB_DATASETS_ROOT": root / "cache" / "datasets",
        "BREEDLAB_RUNS_ROOT": root / "cache" / "runs",
        "BREEDLAB_SERVING_CACHE_DIR": root / "serving",
        "MEDIA_ROOT": root / "media",
    }


@pytest.fixture
def api(staff_user, capsys):
    call_command("create_api_token", staff_user.username)
    return Client(HTTP_AUTHORIZATION=f"Token {capsys.readouterr().out.strip()}")


def test_import_train_on_two_workers_promote_and_classify_through_the_bucket(
    s3_storage, broker, redis_url, settings, tmp_path, api, stanford_dogs_dir, tiny_weights
):
    # 1. The web process imports a dataset version: it goes to the bucket.
    source = tmp_path / "photos"
    copy_tiny_dataset(stanford_dogs_dir, source)
    dataset = dataset_services.dataset_import_folder(name="tiny-s3", source=source)
    assert s3_storage.bytes_under(f"site/datasets/{dataset.path}/manifest.json") > 0

    # 2. Two workers, two runs: each worker downloads the dataset and uploads its run folder.
    hosts = {name: tmp_path / f"host-{name}" for name in ("gpu1", "gpu2")}
    group = WorkerGroup(tmp_path, lambda name: worker_env(
        redis_url=redis_url, settings=settings, var_dir=hosts[name] / "var",
        **host_dirs(hosts[name]), **s3_storage.env, BREEDLAB_HEARTBEAT_TIMEOUT=4,
    ))
    try:
        procs = [group.start(name) for name in hosts]
        for proc in procs:  # both consume before anything is sent: each reserves one run (prefetch 1)
            wait_for(lambda proc=proc: " ready." in proc.log.read_text(), timeout=120, what="a worker to start", procs=procs)
        run_ids = []
        for _ in range(2):
            response = api.post("/api/runs", {"dataset": dataset.pk, "config": TINY_CONFIG}, content_type="application/json")
            assert response.status_code == 201, response.content
            run_ids.append(response.json()["id"])

        def finished():
            runs = list(TrainingRun.objects.filter(pk__in=run_ids))
            return runs if all(r.is_final for r in runs) else None

        runs = wait_for(finished, timeout=300, what="both runs to finish", procs=procs)
    finally:
        group.stop_all()
    for run in runs:
        assert run.status == TrainingRun.Status.SUCCEEDED, run.error + "\n" + run.traceback
    assert {run.worker.split("@")[0] for run in runs} == set(hosts)  # one run on each worker

    for run in runs:
        manifest = json.loads(s3_storage.client().get_object(
            Bucket="breedlab-test", Key=f"site/runs/{run.out_dir}/manifest.json")["Body"].read())
        assert manifest["final"] is True and {"model.safetensors", "meta.json", "validation.json"} <= set(manifest["files"])
        # The last upload removed the training checkpoints: the bucket holds the final files only.
        assert not any(name.startswith("checkpoint/") for name in manifest["files"])
        final_blobs = {entry["sha256"]: entry["size"] for entry in manifest["files"].values()}
        assert s3_storage.bytes_under(f"site/runs/{run.out_dir}/blobs/") == sum(final_blobs.values())
        host = hosts[run.worker.split("@")[0]]
        # The worker trained locally: the dataset in its own cache, downloaded once; only its own run folder.
        assert (host / "cache" / "datasets" / dataset.path / "beagle").is_dir()
        assert (host / "cache" / "runs" / run.out_dir / "model.safetensors").is_file()
        other = next(r for r in runs if r.pk != run.pk)
        assert not (host / "cache" / "runs" / other.out_dir).exists()
    # The web process has no run folder yet: nothing is shared but the bucket. The workers' hosts
    # go away (on one machine their absolute paths would otherwise still be readable).
    for host in hosts.values():
        shutil.rmtree(host)
    web_runs = Path(settings.RUNS_ROOT)
    assert not any((web_runs / run.out_dir).exists() for run in runs)

    # 3. Promote the first run's model through the API and classify: the web process downloads it.
    served, spare = runs
    version = ModelVersion.objects.get(run=served)
    response = api.post(f"/api/models/{version.pk}/promote")
    assert response.status_code == 200 and response.json()["is_active"] is True, response.content
    photo = sorted((stanford_dogs_dir / "pug").iterdir())[-1]  # not among the photos trained on
    with photo.open("rb") as fh:
        answer = Client().post("/api/predict", {"image": fh})
    assert answer.status_code == 200, answer.content
    assert answer.json()["model"]["id"] == version.pk
    assert {p["label"] for p in answer.json()["predictions"]} <= {"beagle", "chihuahua", "pug"}
    assert (web_runs / served.out_dir / "model.safetensors").is_file()
    assert Client().get(f"/runs/{served.pk}/").status_code == 200
    # The validation page (the run's validation.json) and its photos (the dataset), from the bucket.
    staff = Client()
    staff.force_login(User.objects.get(is_staff=True))
    validation = staff.get(f"/runs/{served.pk}/validation/")
    assert validation.status_code == 200
    photo_url = re.search(rf'/datasets/{dataset.pk}/thumbs/[^"]+', validation.content.decode())
    assert photo_url and staff.get(html.unescape(photo_url.group(0))).status_code == 200

    # 4. Deleting the other run frees in the bucket what the storage page said.
    before = s3_storage.bytes_under("site/runs/")
    said = storage_services.item_delete(obj=spare)
    assert said == s3_storage.bytes_under(f"site/runs/{spare.out_dir}/") > 0
    done = storage_services.purge_deleted(now=timezone.now() + timedelta(hours=settings.BREEDLAB_DELETE_GRACE_HOURS, minutes=1))
    assert done["run"] == 1
    assert before - s3_storage.bytes_under("site/runs/") == said


def test_a_run_whose_worker_is_lost_resumes_on_another_worker_from_the_bucket(
    s3_storage, broker, redis_url, settings, tmp_path, api, stanford_dogs_dir, tiny_weights
):
    from classifier.runs.reaper import run_reap_stale

    source = tmp_path / "photos"
    copy_tiny_dataset(stanford_dogs_dir, source)
    dataset = dataset_services.dataset_import_folder(name="tiny-s3", source=source)
    hosts = {name: tmp_path / f"host-{name}" for name in ("doomed", "spare")}
    group = WorkerGroup(tmp_path, lambda name: worker_env(
        redis_url=redis_url, settings=settings, var_dir=hosts[name] / "var",
        **host_dirs(hosts[name]), **s3_storage.env, BREEDLAB_HEARTBEAT_TIMEOUT=4, BREEDLAB_MAX_RUN_ATTEMPTS=2,
    ))
    config = {**TINY_CONFIG, "finetune_epochs": 200}  # long enough to be mid-run when the worker dies
    try:
        doomed = group.start("doomed")
        response = api.post("/api/runs", {"dataset": dataset.pk, "config": config}, content_type="application/json")
        run_id = response.json()["id"]
        manifest_key = f"site/runs/run-{run_id}/manifest.json"

        def uploaded_epochs() -> int:
            try:
                body = s3_storage.client().get_object(Bucket="breedlab-test", Key=manifest_key)["Body"].read()
            except Exception:  # noqa: BLE001 - not uploaded yet
                return 0
            return TrainingRun.objects.get(pk=run_id).epochs.count() if "checkpoint/last.json" in json.loads(body)["files"] else 0

        wait_for(lambda: uploaded_epochs() >= 3, timeout=180, what="three uploaded checkpoints", procs=[doomed])
        os.killpg(doomed.pid, signal.SIGKILL)  # the host is gone, and its disk with it
        doomed.wait(10)
        shutil.rmtree(hosts["doomed"])
        run = TrainingRun.objects.get(pk=run_id)
        epochs_before = run.epochs.count()
        first_rows = set(run.epochs.values_list("pk", flat=True))
        assert run_reap_stale(lost_worker=run.worker) == [run_id]

        spare = group.start("spare")  # another host: an empty cache, only the bucket to resume from
        run = wait_for(
            lambda: (r := TrainingRun.objects.get(pk=run_id)).attempts == 2 and r.epochs.count() > epochs_before + 1 and r,
            timeout=180, what="the resumed attempt to train", procs=[spare],
        )
    finally:
        group.stop_all()
    assert run.worker.startswith("spare@")
    rows = list(run.epochs.values_list("phase", "epoch"))
    # It went on from an uploaded checkpoint: the rows of the epochs trained on the lost host are
    # kept (an attempt without a checkpoint starts over and deletes them), no epoch is recorded
    # twice, and the numbers go on without a gap.
    assert first_rows <= set(run.epochs.values_list("pk", flat=True))
    assert len(rows) == len(set(rows))
    finetune = sorted(e for p, e in rows if p == "finetune")
    assert finetune == list(range(1, len(finetune) + 1))
    assert (hosts["spare"] / "cache" / "runs" / f"run-{run_id}" / "checkpoint" / "last.json").is_file()
