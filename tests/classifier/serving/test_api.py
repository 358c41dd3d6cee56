"""POST /api/predict and GET /api/models/active with a real fine-tuned model."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client
from PIL import Image

from classifier.models import ModelVersion, Prediction

pytestmark = pytest.mark.usefixtures("fresh_serving")

URL = "/api/predict"


def photo_upload(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes(), content_type="image/jpeg")


def jpeg(img: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def stored_files(settings) -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "predictions"
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_real_photos_get_their_breed(client, active_model, held_out_photos, settings):
    photos = [(breed, path) for breed, paths in held_out_photos.items() for path in paths[:4]]
    response = client.post(URL, {"image": [photo_upload(p) for _, p in photos]})
    assert response.status_code == 200, response.content
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == len(photos)
    right = sum(a["predictions"][0]["label"] == breed for a, (breed, _) in zip(answers, photos))
    assert right >= 0.9 * len(photos)
    first = answers[0]
    assert set(first) == {
        "model", "verdict", "thresholds", "dog_mass", "is_dog", "predictions", "base_predictions", "elapsed_ms",
    }
    assert first["model"] == {"id": active_model.pk, "name": "dogs4", "backbone": "efficientnet_lite0", "builtin": False}
    assert len(first["predictions"]) == 4 and len(first["base_predictions"]) == 5
    assert set(first["predictions"][0]) == {"label", "score"}
    assert sum(a["is_dog"] for a in answers) >= 0.9 * len(photos)
    assert Prediction.objects.filter(source="api").count() == len(photos)
    assert len(stored_files(settings)) == len(photos)


def test_one_photo_gets_one_answer_object_with_top_k(client, active_model, held_out_photos):
    response = client.post(URL, {"image": photo_upload(held_out_photos["pug"][0]), "top_k": "2"})
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body, dict) and len(body["predictions"]) == 2 and len(body["base_predictions"]) == 2
    assert body["predictions"][0]["label"] == "pug"
    assert body["elapsed_ms"] > 0


def test_photos_without_a_dog_mostly_come_back_as_not_dogs(client, active_model, not_dogs_dir):
    photos = sorted((not_dogs_dir / "cats").iterdir())[:6] + sorted((not_dogs_dir / "other").iterdir())[:6]
    response = client.post(URL, {"image": [photo_upload(p) for p in photos]})
    assert response.status_code == 200
    not_dogs = sum(not a["is_dog"] for a in response.json())
    assert not_dogs >= 0.8 * len(photos)


def test_an_exif_rotated_photo_gets_the_same_answer_as_one_rotated_by_hand(client, active_model, held_out_photos):
    original = Image.open(held_out_photos["golden_retriever"][0]).convert("RGB")
    stored_sideways = original.transpose(Image.Transpose.ROTATE_90)  # what a phone stores...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and the tag that says "turn 90° clockwise to display"
    tagged_bytes = jpeg(stored_sideways, exif=exif.tobytes())
    # By hand: the same decoded pixels, turned upright, sent losslessly.
    upright = Image.open(io.BytesIO(tagged_bytes)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    png = io.BytesIO()
    upright.save(png, format="PNG")
    tagged = SimpleUploadedFile("tagged.jpg", tagged_bytes, content_type="image/jpeg")
    by_hand = SimpleUploadedFile("upright.png", png.getvalue(), content_type="image/png")
    sideways = SimpleUploadedFile("sideways.png", _png_of(Image.open(io.BytesIO(tagged_bytes)).convert("RGB")))
    a, b, c = client.post(URL, {"image": [tagged, by_hand, sideways]}).json()
    assert a["predictions"][0]["label"] == b["predictions"][0]["label"] == "golden_retriever"
    assert a["predictions"][0]["score"] == pytest.approx(b["predictions"][0]["score"], abs=1e-5)
    # Without the tag the same pixels are a different (sideways) photo: the tag was really used.
    assert abs(c["predictions"][0]["score"] - a["predictions"][0]["score"]) > 1e-4 or c["predictions"][0]["label"] != "golden_retriever"


def _png_of(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "status", "message"),
    [
        (lambda p: SimpleUploadedFile("notes.jpg", b"just some text, not a photo" * 20), 400, "not an image"),
        (lambda p: SimpleUploadedFile("half.jpg", p.read_bytes()[: len(p.read_bytes()) // 2]), 400, "truncated"),
        (lambda p: SimpleUploadedFile("icon.ico", _ico()), 400, "supported format"),
        (lambda p: SimpleUploadedFile("huge.jpg", b"\xff\xd8" + b"\x00" * 40_000), 413, "at most"),
        (lambda p: SimpleUploadedFile("wide.png", _png(300, 300)), 400, "pixels"),
    ],
    ids=["text", "truncated", "unsupported", "too-large", "too-many-pixels"],
)
def test_each_bad_input_gets_its_status_and_stores_nothing(client, active_model, held_out_photos, settings, make, status, message):
    settings.BREEDLAB_MAX_IMAGE_BYTES = 30_000
    settings.BREEDLAB_MAX_IMAGE_PIXELS = 60_000
    good = held_out_photos["beagle"][1]
    if good.stat().st_size > 30_000:
        small = Image.open(good).convert("RGB")
        small.thumbnail((200, 200))
        good_upload = SimpleUploadedFile("good.jpg", jpeg(small))
    else:
        good_upload = photo_upload(good)
    response = client.post(URL, {"image": [good_upload, make(held_out_photos["beagle"][2])]})
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"} and message in body["error"] and "Photo 2 of 2" in body["error"]
    assert Prediction.objects.count() == 0
    assert stored_files(settings) == []


def _ico() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="ICO")
    return buffer.getvalue()


def _png(w: int, h: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (w, h), "blue").save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_request_without_an_image_field_is_a_400(client, active_model):
    response = client.post(URL, {"photo": SimpleUploadedFile("x.jpg", b"123")})
    assert response.status_code == 400 and "image" in response.json()["error"]


@pytest.mark.parametrize("top_k", ["0", "abc", "21"])
def test_a_bad_top_k_is_a_400(client, active_model, held_out_photos, top_k):
    response = client.post(URL, {"image": photo_upload(held_out_photos["pug"][0]), "top_k": top_k})
    assert response.status_code == 400 and "top_k" in response.json()["error"]
    assert Prediction.objects.count() == 0


def test_over_the_rate_limit_it_answers_429_and_stores_nothing(client, active_model, held_out_photos, settings):
    settings.BREEDLAB_RATE_LIMIT = "2/m"
    photo = held_out_photos["pug"][0]
    assert client.post(URL, {"image": photo_upload(photo)}).status_code == 200
    assert client.post(URL, {"image": photo_upload(photo)}).status_code == 200
    response = client.post(URL, {"image": photo_upload(photo)})
    assert response.status_code == 429
    assert "Too many" in response.json()["error"] and int(response["Retry-After"]) >= 1
    assert Prediction.objects.count() == 2
    # Another client has its own budget.
    other = client.post(URL, {"image": photo_upload(photo)}, REMOTE_ADDR="10.0.0.9")
    assert other.status_code == 200


def test_without_a_loadable_model_it_answers_503_and_stores_nothing(client, db, held_out_photos, settings):
    ModelVersion.objects.filter(kind="builtin").delete()  # a database without even the built-in model
    response = client.post(URL, {"image": photo_upload(held_out_photos["pug"][0])})
    assert response.status_code == 503
    assert "No model version exists" in response.json()["error"]
    assert Prediction.objects.count() == 0 and stored_files(settings) == []


def test_models_active_describes_the_serving_version(client, active_model):
    body = client.get("/api/models/active").json()
    assert body["id"] == active_model.pk and body["class_names"] == ["beagle", "golden_retriever", "pug", "siberian_husky"]
    assert body["backbone"] == "efficientnet_lite0" and body["promoted_at"]


def test_models_active_is_a_404_without_one(client, db):
    ModelVersion.objects.filter(kind="builtin").delete()  # a database without even the built-in model
    response = client.get("/api/models/active")
    assert response.status_code == 404 and "error" in response.json()


def test_both_endpoints_are_in_the_openapi_schema(client, db):
    schema = client.get("/api/openapi.json").json()
    assert "post" in schema["paths"]["/api/predict"]
    assert "get" in schema["paths"]["/api/models/active"]
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["image"]["items"]["format"] == "binary"
    assert {"400", "413", "429", "503"} <= set(schema["paths"]["/api/predict"]["post"]["responses"])


@pytest.mark.django_db(transaction=True)
def test_promoting_a_model_while_requests_run_causes_no_error_response(
    finetuned_run, perturbed_run, register_version, held_out_photos, settings
):
    settings.BREEDLAB_RATE_LIMIT = "off"
    settings.BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT = 100  # every hammering thread is the same test client
    a = register_version(finetuned_run, name="a")
    b = register_version(perturbed_run, name="b", active=False)
    data = held_out_photos["siberian_husky"][0].read_bytes()
    statuses: list[int] = []
    answered_by: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        c = Client()
        try:
            while not stop.is_set():
                r = c.post(URL, {"image": SimpleUploadedFile("husky.jpg", data, content_type="image/jpeg")})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    answered_by.add(r.json()["model"]["name"])
        finally:
            connection.close()

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        from django.utils import timezone

        for i in range(6):
            time.sleep(0.6)
            new, old = (b, a) if i % 2 == 0 else (a, b)
            with transaction.atomic():  # as the promote service does it
                ModelVersion.objects.filter(pk=old.pk).update(is_active=False)
                ModelVersion.objects.filter(pk=new.pk).update(is_active=True, promoted_at=timezone.now())
        time.sleep(0.6)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert statuses and set(statuses) == {200}, statuses
    assert answered_by == {"a", "b"}


def test_a_prediction_request_makes_a_few_queries_and_writes_its_row_with_one_insert(client, active_model, held_out_photos):
    from django.test.utils import CaptureQueriesContext

    photo = held_out_photos["pug"][0]
    assert client.post(URL, {"image": photo_upload(photo)}).status_code == 200  # loads the model
    with CaptureQueriesContext(connection) as queries:
        response = client.post(URL, {"image": photo_upload(photo)})
    assert response.status_code == 200, response.content
    statements = [q["sql"].lstrip().split()[0].upper() for q in queries.captured_queries]
    table = Prediction._meta.db_table
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1 and table in inserts[0], inserts
    assert not {"UPDATE", "DELETE"} & set(statements), queries.captured_queries
    # The active version's id (one indexed SELECT) and the row: no transaction around a single INSERT.
    assert statements == ["SELECT", "INSERT"], [q["sql"][:120] for q in queries.captured_queries]


def test_the_answer_is_sent_before_its_row_is_written_and_the_row_follows(active_model, held_out_photos):
    """Through the WSGI handler as a server calls it: the answer's bytes first; the row and the photo
    are written when the server closes the response after sending them."""
    import json
    import sys

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    Client().post(URL, {"image": photo_upload(held_out_photos["pug"][0])})  # loads the model
    body = encode_multipart(BOUNDARY, {"image": photo_upload(held_out_photos["pug"][0])})
    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": URL, "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "testserver",
        "CONTENT_TYPE": MULTIPART_CONTENT, "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
    }
    before = Prediction.objects.count()
    statuses = []
    # As Django's test client does: the test's database connection must survive the request signals.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
        sent = b"".join(response)
        assert statuses == ["200 OK"] and json.loads(sent)["predictions"][0]["label"] == "pug"
        assert Prediction.objects.count() == before  # answered, not recorded yet
        response.close()  # what the server does after writing the answer
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    assert Prediction.objects.count() == before + 1
    assert Prediction.objects.latest("pk").source == "api"


def test_a_row_that_cannot_be_written_after_the_answer_is_logged_and_leaves_no_photo(
    client, active_model, held_out_photos, settings, monkeypatch, caplog
):
    client.post(URL, {"image": photo_upload(held_out_photos["pug"][0])})  # loads the model
    before, files = Prediction.objects.count(), len(stored_files(settings))

    def refuse(self, *args, **kwargs):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(Prediction, "save", refuse)
    response = client.post(URL, {"image": photo_upload(held_out_photos["pug"][0])})
    assert response.status_code == 200 and response.json()["verdict"] == "dog"  # the answer was already given
    assert Prediction.objects.count() == before and len(stored_files(settings)) == files
    assert any("answered but could not be recorded" in r.getMessage() for r in caplog.records)
