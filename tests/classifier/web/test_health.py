import pytest

from classifier.models import ModelVersion
from classifier.web import health

pytestmark = pytest.mark.django_db


def test_health_is_503_and_names_the_broker_when_redis_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["database"]["status"] == "ok"
    assert body["broker"]["status"] == "down"
    assert body["worker"]["status"] == "down"


def test_health_is_200_when_every_dependency_answers(client, monkeypatch):
    monkeypatch.setattr(health, "check_broker", lambda: health.Check("ok", "redis"))
    monkeypatch.setattr(health, "check_worker", lambda: health.Check("ok", "1 worker(s)"))
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["model"]["status"] == "none"


def test_an_active_model_whose_files_are_missing_makes_health_fail(client, monkeypatch, settings):
    monkeypatch.setattr(health, "check_broker", lambda: health.Check("ok", "redis"))
    monkeypatch.setattr(health, "check_worker", lambda: health.Check("ok", "1 worker(s)"))
    ModelVersion.objects.create(name="gone", backbone="efficientnet_lite0", path="gone", is_active=True)
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json()["model"]["status"] == "down"
    (settings.RUNS_ROOT / "gone").mkdir()
    (settings.RUNS_ROOT / "gone" / "model.safetensors").write_bytes(b"x")
    assert client.get("/api/health").json()["model"]["status"] == "ok"


def test_the_openapi_schema_lists_the_health_endpoint(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert "/api/health" in response.json()["paths"]
    docs = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs and "cdn" not in docs.lower()
