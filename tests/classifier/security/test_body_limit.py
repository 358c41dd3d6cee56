"""Oversized bodies are refused before anything reads them (issue 13, bullet 2)."""

from __future__ import annotations

import io

import pytest
from django.test import Client

from classifier.web.bodylimit import FRAMING, body_budget


class Untouchable(io.RawIOBase):
    """A request body that fails the test if anything reads it."""

    def read(self, size=-1):
        raise AssertionError("the body was read before the size check")

    readline = read


def post(client: Client, path: str, length: int, **extra):
    return client.generic(
        "POST", path, b"", CONTENT_TYPE="multipart/form-data; boundary=x", CONTENT_LENGTH=str(length),
        **{"wsgi.input": Untouchable(), **extra},
    )


@pytest.mark.parametrize("path", ["/api/predict", "/", "/datasets/new/", "/api/datasets", "/runs/new/", "/admin/login/"])
def test_a_body_over_its_routes_budget_is_a_413_before_anything_reads_it(db, path):
    client = Client(enforce_csrf_checks=True)  # without the early check CSRF would parse the body and answer 403
    response = post(client, path, body_budget(path) + 1)
    assert response.status_code == 413
    assert response["Connection"] == "close"
    if path.startswith("/api/"):
        assert "too large" in response.json()["error"]


def test_each_route_has_the_budget_of_what_it_accepts(settings):
    settings.BREEDLAB_MAX_IMAGE_BYTES = 10 * 2**20
    settings.BREEDLAB_MAX_BATCH_IMAGES = 16
    settings.BREEDLAB_MAX_ARCHIVE_BYTES = 2**30
    assert body_budget("/api/predict") == 160 * 2**20 + FRAMING
    assert body_budget("/") == 10 * 2**20 + FRAMING
    assert body_budget("/api/datasets") == 2**30 + FRAMING
    assert body_budget("/datasets/new/") == 2**30 + FRAMING
    assert body_budget("/runs/new/") == settings.DATA_UPLOAD_MAX_MEMORY_SIZE + FRAMING
    assert body_budget("/no/such/page") == settings.DATA_UPLOAD_MAX_MEMORY_SIZE + FRAMING


class Counting(io.RawIOBase):
    """A chunked body of ``total`` bytes that records how much was read of it."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.read_bytes = 0

    def read(self, size=-1):
        size = self.left if size is None or size < 0 else min(size, self.left)
        self.left -= size
        self.read_bytes += size
        return b"a" * size


def test_a_chunked_body_is_counted_as_it_streams_and_refused_past_the_budget(db):
    budget = body_budget("/api/predict")
    stream = Counting(10 * budget)
    response = Client().generic(
        "POST", "/api/predict", b"", content_type="multipart/form-data; boundary=x", CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input": stream},
    )
    assert response.status_code == 413
    assert stream.read_bytes <= budget + 64 * 1024  # stopped at the budget, not read whole


def test_a_chunked_body_under_the_budget_reaches_the_view_whole(db):
    body = b'--x\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n999\r\n--x--\r\n'
    response = Client().generic(
        "POST", "/api/predict", b"", CONTENT_TYPE="multipart/form-data; boundary=x", CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked", **{"wsgi.input": io.BytesIO(body)},
    )
    assert response.status_code == 400
    assert "image" in response.json()["error"]  # the form was parsed: no photo in it
