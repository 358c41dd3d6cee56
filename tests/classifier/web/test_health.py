import time

import pytest
from django.contrib.auth.models import User

from classifier.models import ModelVersion
from classifier.web import health, heartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory):
    """A Redis of this module's own: workers of other test runs on this machine write their
    heartbeats into the shared one (127.0.0.1:6379), which would make these answers flaky."""
    from tests.services import EmbeddedRedis

    server = EmbeddedRedis(tmp_path_factory.mktemp("health-redis"))
    yield server.url
    server.stop()


@pytest.fixture
def real_redis(settings, own_redis):
    import redis

    settings.REDIS_URL = own_redis
    redis.Redis.from_url(own_redis).delete(heartbeat.KEY)
    yield own_redis
    redis.Redis.from_url(own_redis).delete(heartbeat.KEY)


@pytest.fixture
def no_broadcast(monkeypatch):
    from config.celery import app

    def broadcast(*args, **kwargs):
        raise AssertionError("/api/health must not broadcast to the workers")

    monkeypatch.setattr(app.control, "inspect", broadcast)
    monkeypatch.setattr(app.control, "broadcast", broadcast)


def test_health_is_503_and_names_the_broker_when_redis_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"]["status"] == "ok"
    assert body["broker"]["status"] == "down"
    assert body["worker"]["status"] == "down"


def test_health_is_200_ok_with_a_training_worker_heartbeat_and_never_broadcasts(client, real_redis, no_broadcast):
    heartbeat.beat("training@host-a", ["training"])
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["worker"]["status"] == "ok"
    assert body["model"]["status"] == "ok"  # the built-in model serves until one is promoted


def test_without_a_training_worker_health_stays_200_and_says_degraded(client, real_redis, no_broadcast, settings):
    heartbeat.beat("maint@host-a", ["maintenance"])
    heartbeat.beat("training@old", ["training"], now=time.time() - 4 * settings.BREEDLAB_WORKER_HEARTBEAT_SECONDS)
    response = client.get("/api/health")
    assert response.status_code == 200  # the web host stays in the load balancer
    body = response.json()
    assert body["status"] == "degraded" and body["worker"]["status"] == "down"


def test_details_are_for_staff_only(client, real_redis, no_broadcast):
    heartbeat.beat("training@secret-host", ["training"])
    public = client.get("/api/health")
    assert "secret-host" not in public.content.decode()
    assert set(public.json()["worker"]) == {"status"}
    assert public.json()["database"]["detail"] in ("sqlite", "postgresql")
    staff = User.objects.create_user("boss", password="pw", is_staff=True)
    client.force_login(staff)
    body = client.get("/api/health").json()
    assert body["worker"]["workers"] == ["training@secret-host"]


def test_an_active_model_whose_files_are_missing_makes_health_fail(client, real_redis, settings):
    heartbeat.beat("training@host-a", ["training"])
    ModelVersion.objects.filter(is_active=True).update(is_active=False)  # the built-in one
    ModelVersion.objects.create(name="gone", backbone="efficientnet_lite0", path="gone", is_active=True)
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["model"]["status"] == "down"
    (settings.RUNS_ROOT / "gone").mkdir()
    (settings.RUNS_ROOT / "gone" / "model.safetensors").write_bytes(b"x")
    assert client.get("/api/health").json()["model"]["status"] == "ok"


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_worker_writes_the_heartbeat_that_health_reads(real_redis, tmp_path, settings):
    from tests.services import start_worker, stop_process

    settings.BREEDLAB_WORKER_HEARTBEAT_SECONDS = 1
    proc = start_worker(
        env={"REDIS_URL": real_redis, "BREEDLAB_WORKER_HEARTBEAT_SECONDS": "1", "DJANGO_SETTINGS_MODULE": "config.test_settings"},
        name="hb", queues="maintenance", log=tmp_path / "worker.log",
    )
    try:
        deadline = time.monotonic() + 90
        while not heartbeat.fresh_workers():
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.5)
        ((name, queues),) = heartbeat.fresh_workers().items()
        assert name.startswith("hb@") and queues == ["maintenance"]
        assert health.check_worker().status == "down"  # a maintenance worker does not train
    finally:
        stop_process(proc)


def test_the_openapi_schema_lists_the_health_endpoint(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert "/api/health" in response.json()["paths"]
    docs = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs and "cdn" not in docs.lower()
