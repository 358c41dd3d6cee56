"""Privacy defaults (issue 13, bullet 9)."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.test import Client
from django.utils import timezone
from PIL import Image

from classifier.models import ModelVersion, Prediction, TrainingRun
from classifier.serving.services import prediction_purge_anonymous

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def test_dataset_photos_are_private_to_staff_by_default():
    from django.conf import settings

    assert settings.BREEDLAB_PUBLIC_DATASET_IMAGES is False


def _jpeg_with_gps() -> bytes:
    image = Image.new("RGB", (40, 30), (200, 100, 50))
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {1: "N", 2: (55.0, 45.0, 0.0), 3: "E", 4: (37.0, 37.0, 0.0)}  # GPS IFD
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    return buffer.getvalue()


def test_served_dataset_photos_carry_no_exif_or_gps(staff_client, tmp_path, settings):
    from tests.classifier.datasets.test_views import make_ready_dataset

    dataset = make_ready_dataset(tmp_path)
    rel = dataset.split["val"][0]
    path = Path(settings.DATASETS_ROOT) / dataset.path / rel
    path.write_bytes(_jpeg_with_gps())
    assert Image.open(path).getexif().get(0x010F) == "SecretCam"
    response = staff_client.get(f"/datasets/{dataset.pk}/images/{rel}")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    served = Image.open(io.BytesIO(body))
    assert not served.getexif() and b"SecretCam" not in body
    assert served.size == (40, 30)
    assert Image.open(path).getexif().get(0x010F) == "SecretCam"  # the dataset itself is untouched


def test_staff_usernames_are_hidden_from_anonymous_api_readers(make_run):
    boss = User.objects.create_user("the-boss", password="pw", is_staff=True)
    run = make_run(status=TrainingRun.Status.RUNNING, created_by=boss, worker="gpu7@secret-host")
    ModelVersion.objects.create(name="m", backbone="efficientnet_lite0", path="m", promoted_by=boss)
    anonymous = Client()
    for url in ("/api/runs", f"/api/runs/{run.pk}", "/api/models"):
        body = anonymous.get(url).content.decode()
        assert "the-boss" not in body and "secret-host" not in body, url
    signed_in = Client()
    signed_in.force_login(boss)
    assert "the-boss" in signed_in.get(f"/api/runs/{run.pk}").content.decode()


def test_logins_are_throttled_per_client_and_name(settings):
    settings.BREEDLAB_LOGIN_FAILURES = 3
    User.objects.create_user("alice", password="right-password", is_staff=True)
    client = Client()
    for _ in range(3):
        page = client.post("/admin/login/", {"username": "alice", "password": "wrong"})
        assert page.status_code == 200  # the form again, "enter a correct username and password"
    refused = client.post("/admin/login/", {"username": "alice", "password": "right-password"})
    assert refused.status_code == 200 and "_auth_user_id" not in client.session
    # Another address, same name: still refused (per-name counter).
    other = Client(REMOTE_ADDR="10.9.9.9")
    other.post("/admin/login/", {"username": "alice", "password": "right-password"})
    assert "_auth_user_id" not in other.session
    cache.clear()  # the window ends
    ok = Client().post("/admin/login/", {"username": "alice", "password": "right-password"})
    assert ok.status_code == 302


def test_anonymous_predictions_and_photos_go_after_the_retention_period(settings):
    settings.BREEDLAB_ANONYMOUS_RETENTION_DAYS = 30
    owner = User.objects.create_user("u", password="pw")
    rows = {}
    for name, user, age in (("old-anon", None, 31), ("new-anon", None, 29), ("old-user", owner, 400)):
        prediction = Prediction.objects.create(top_label="pug", is_dog=True, user=user)
        prediction.image.save(f"{name}.jpg", ContentFile(b"jpeg"))
        Prediction.objects.filter(pk=prediction.pk).update(created_at=timezone.now() - timedelta(days=age))
        rows[name] = prediction
    old_file = Path(rows["old-anon"].image.path)
    assert prediction_purge_anonymous() == 1
    assert not old_file.exists()
    assert set(Prediction.objects.values_list("pk", flat=True)) == {rows["new-anon"].pk, rows["old-user"].pk}


def test_retention_and_clearsessions_are_scheduled_on_the_maintenance_queue():
    from config.celery import app

    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {"classifier.tasks.purge_anonymous_predictions", "classifier.tasks.clear_sessions"} <= tasks
    app.loader.import_default_modules()
    for name in ("classifier.tasks.purge_anonymous_predictions", "classifier.tasks.clear_sessions"):
        assert name in app.tasks
        assert app.amqp.router.route({}, name, args=(), kwargs={})["queue"].name == "maintenance"
