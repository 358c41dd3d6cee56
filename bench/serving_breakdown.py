"""Where the milliseconds of one recorded prediction go, in-process (no sockets).

    BREEDLAB_VAR_DIR=<var with an active model version> BREEDLAB_RATE_LIMIT=off DEBUG=1 \
        .venv/bin/python bench/serving_breakdown.py

Each row is the p50 of 100 calls (ms): decoding the upload, preprocessing, the forward, the
active-version check, storing the photo and its row, the whole service, and POST /api/predict
through Django's test client (Django + DRF + multipart on top). Writes nothing but rows.
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
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import Client

    from classifier.serving import cache, imaging, services

    data = (SHARED / "datasets/stanford-dogs-120/golden_retriever/n02099601_1010.jpg").read_bytes()

    def upload():
        return SimpleUploadedFile("a.jpg", data, content_type="image/jpeg")

    loaded = cache.get_active()
    model = loaded.model
    decoded = imaging.open_upload(upload())
    x = model.preprocess([decoded.image])

    def store() -> None:
        answer = services._answer(decoded, 0, model.forward(x), model, loaded.thresholds, loaded, 5, 1.0)
        answer.photo = imaging.stored_file(decoded.image, decoded.plain_jpeg)
        services.prediction_record([answer])

    client = Client()
    rows = {
        "read + decode + sha256 (open_upload)": timed(lambda: imaging.open_upload(upload())),
        "preprocess": timed(lambda: model.preprocess([decoded.image])),
        "forward": timed(lambda: model.forward(x)),
        "active-version check (one query)": timed(cache.get_active),
        "forward + store the photo (as is when plain) + insert the row": timed(store),
        "prediction_create (the whole service)": timed(lambda: services.prediction_create(uploads=[upload()], source="api")),
        "POST /api/predict in-process (Django + DRF + multipart)": timed(lambda: client.post("/api/predict", {"image": upload()})),
    }
    print("| step | p50 ms |\n|---|---|")
    for name, ms in rows.items():
        print(f"| {name} | {ms} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
