"""Per-process prediction slots and per-client requests in flight (issue 13, bullet 1)."""

from __future__ import annotations

import io

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from classifier.models import Prediction
from classifier.serving import ratelimit, services


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def png() -> SimpleUploadedFile:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "white").save(buffer, format="PNG")
    return SimpleUploadedFile("a.png", buffer.getvalue(), content_type="image/png")


def test_a_client_with_requests_in_flight_gets_429_before_any_decoding(client, db, settings, monkeypatch):
    settings.BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT = 2
    decoded = []
    monkeypatch.setattr(services, "decode_uploads", lambda uploads: decoded.append(uploads) or [])
    cache.set("inflight:predict:ip:127.0.0.1", 2, 60)  # two of this client's requests still running
    response = client.post("/api/predict", {"image": png()})
    assert response.status_code == 429, response.content
    assert "at a time" in response.json()["error"] and response["Retry-After"] == "1"
    page = client.post("/", {"image": png()})
    assert page.status_code == 429
    assert decoded == [] and not Prediction.objects.exists()
    assert cache.get("inflight:predict:ip:127.0.0.1") == 2  # refused requests release what they counted


def test_the_in_flight_count_is_released_after_each_request(client, db, settings, monkeypatch):
    settings.BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT = 1

    def boom(**kwargs):
        raise services.ImageRejected("nope")

    monkeypatch.setattr("classifier.serving.api.prediction_create", boom)
    for _ in range(3):  # with a leak the second request would already be refused
        assert client.post("/api/predict", {"image": png()}).status_code == 400
    assert cache.get("inflight:predict:ip:127.0.0.1") == 0


def test_when_every_slot_of_the_process_stays_taken_the_answer_is_503_without_decoding(client, db, settings, monkeypatch):
    settings.BREEDLAB_MAX_CONCURRENT_PREDICTIONS = 1
    settings.BREEDLAB_PREDICT_WAIT_SECONDS = 0.2
    decoded = []
    monkeypatch.setattr(services, "decode_uploads", lambda uploads: decoded.append(uploads) or [])
    slots = services.prediction_slots()
    assert slots.acquire(timeout=1)  # another request is decoding
    try:
        response = client.post("/api/predict", {"image": png()})
    finally:
        slots.release()
    assert response.status_code == 503 and "busy" in response.json()["error"]
    assert response["Retry-After"] == "30"
    assert decoded == []


def test_in_flight_counts_per_client():
    class Req:
        META = {"REMOTE_ADDR": "10.0.0.7"}
        user = None

    with ratelimit.InFlight(Req()) as first, ratelimit.InFlight(Req()) as second, ratelimit.InFlight(Req()) as third:
        assert first.allowed and second.allowed and not third.allowed
    assert cache.get("inflight:predict:ip:10.0.0.7") == 0
