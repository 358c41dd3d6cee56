"""Fixtures for the Django side: temporary storage roots, users, factories."""

from __future__ import annotations

import pytest

from tests.classifier.model_fixtures import *  # noqa: F401,F403  (a fine-tuned model, trained once per session)
from tests.classifier.run_fixtures import *  # noqa: F401,F403  (a tiny real dataset, a recorded training queue)
from tests.classifier.s3_fixtures import *  # noqa: F401,F403  (an S3-compatible server, this process using it)


@pytest.fixture(autouse=True)
def _english_by_default():
    """A request in Russian leaves Russian active in the thread; each test starts in English."""
    from django.utils import translation

    translation.activate("en")
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path):
    """Every test writes media, datasets and runs into its own temporary folders."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.DATASETS_ROOT = tmp_path / "datasets"
    settings.RUNS_ROOT = tmp_path / "runs"
    for folder in (settings.MEDIA_ROOT, settings.DATASETS_ROOT, settings.RUNS_ROOT):
        folder.mkdir()


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("staff", password="staff-pass-123", is_staff=True, is_superuser=True)


@pytest.fixture
def plain_user(django_user_model):
    return django_user_model.objects.create_user("visitor", password="visitor-pass-123")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def make_dataset(db):
    from classifier.models import Dataset

    def make(**fields):
        fields.setdefault("name", "dogs")
        fields.setdefault("path", "dogs/v1")
        fields.setdefault("status", Dataset.Status.READY)
        fields.setdefault("classes", ["beagle", "pug"])
        fields.setdefault("image_count", 10)
        return Dataset.objects.create(**fields)

    return make


@pytest.fixture
def make_run(db, make_dataset):
    from classifier.models import TrainingRun

    def make(**fields):
        if "dataset" not in fields:
            fields["dataset"] = make_dataset(name=f"dogs-{TrainingRun.objects.count()}")
        fields.setdefault("config", {"backbone": "efficientnet_lite0", "optimizer": "adam"})
        return TrainingRun.objects.create(**fields)

    return make


@pytest.fixture
def broker(redis_url):
    """This process's Celery app sends to the test Redis, with an empty `training` queue (tests that
    start real workers; test_broker_faults overrides it with its own Redis)."""
    from tests.classifier.worker_fixtures import celery_sending_to

    with celery_sending_to(redis_url) as app:
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete("training")
        yield app
