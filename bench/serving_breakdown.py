"""Where the milliseconds of one recorded prediction go, in-process (no sockets).

    BREEDLAB_VAR_DIR=<var with an active model version> BREEDLAB_RATE_LIMIT=off DEBUG=1 \
        .venv/bin/python bench/serving_breakdown.py

Each row is the p50 of 100 calls (ms): decoding the upload, preprocessing, the forward, the
active-version check (with and without the promotion announcement), the admission round trip
(rate and in-flight counters, one Redis call when the cache is Redis), storing the photo and its
row (which the API does after its answer is sent), the whole service, and POST /api/predict
through Django's WSGI handler until the answer's bytes are out, and until the response is closed
(the recording included). Writes nothing but rows.
"""

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("BREEDLAB_SHARED_DIR", ROOT.parent / "shared"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def timed(fn, n: int = 100) -> float:
    for _ in range(5):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples) * 1000, 2)


def main() -> int:
    import django

    django.setup()
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart

    from classifier.serving import cache, imaging, ratelimit, services
    from classifier.versions.selectors import ACTIVE_MODEL_CACHE_KEY

    data = (SHARED / "datasets/stanford-dogs-120/golden_retriever/n02099601_1010.jpg").read_bytes()

    def upload():
        return SimpleUploadedFile("a.jpg", data, content_type="image/jpeg")

    loaded = cache.get_active()
    model = loaded.model
    decoded = imaging.open_upload(upload())
    x = model.preprocess([decoded.image])

    outputs = model.forward(x)

    def record() -> None:
        answer = services._answer(decoded, 0, outputs, model, loaded.thresholds, loaded, 5, 1.0)
        answer.photo = imaging.stored_file(decoded.image, decoded.plain_jpeg)
        services.prediction_record([answer])

    class Visitor:
        META = {"REMOTE_ADDR": "127.0.0.250"}
        user = None

    def admission() -> None:
        with ratelimit.admit(Visitor(), "predict", read=ACTIVE_MODEL_CACHE_KEY):
            pass

    hint = ratelimit.admit(Visitor(), "predict", read=ACTIVE_MODEL_CACHE_KEY)
    hint.__exit__(None, None, None)
    app = WSGIHandler()
    body = encode_multipart(BOUNDARY, {"image": upload()})

    def post() -> tuple[float, float]:
        """Seconds until the answer's bytes are out, and until the response is closed."""
        environ = {
            "REQUEST_METHOD": "POST", "PATH_INFO": "/api/predict", "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.251",
            "HTTP_HOST": "127.0.0.1", "CONTENT_TYPE": MULTIPART_CONTENT, "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        }
        statuses: list[str] = []
        start = time.perf_counter()
        response = app(environ, lambda status, headers: statuses.append(status))
        b"".join(response)
        out = time.perf_counter()
        response.close()
        assert statuses == ["200 OK"], statuses
        return out - start, time.perf_counter() - start

    from django.core.cache import cache as shared

    shared.delete("inflight:predict:ip:127.0.0.251")  # what an interrupted run of this script left counted
    for _ in range(5):
        post()
    posts = [post() for _ in range(100)]
    rows = {
        "read + decode + sha256 (open_upload)": timed(lambda: imaging.open_upload(upload())),
        "preprocess": timed(lambda: model.preprocess([decoded.image])),
        "forward": timed(lambda: model.forward(x)),
        "active-version check, no announcement (one query)": timed(cache.get_active),
        "active-version check, announcement unchanged": timed(lambda: cache.get_active(hint.read)),
        "admission: rate + in flight + announcement (one Redis call), and the release": timed(admission),
        "record: store the photo (as is when plain) + insert the row": timed(record),
        "prediction_create (the whole service, recording included)": timed(
            lambda: services.prediction_create(uploads=[upload()], source="api")
        ),
        "POST /api/predict in-process, until the answer is out": round(statistics.median(p[0] for p in posts) * 1000, 2),
        "POST /api/predict in-process, until the response is closed": round(statistics.median(p[1] for p in posts) * 1000, 2),
    }
    print("| step | p50 ms |\n|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
