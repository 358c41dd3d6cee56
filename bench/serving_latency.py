"""One photo, end to end: where the time of a prediction goes, and how much the serving path saves.

    .venv/bin/python bench/serving_latency.py [--run-dir DIR] [--photo FILE] [--threads 1,2]
                                              [--repeats 200] [--url http://127.0.0.1:8010] [--no-int8]

Rows (p50 / p95 in ms, per thread count):
  eager torch forward      the fine-tuned TransferModel alone, eager PyTorch (channels_last, inference_mode)
  eager torch, both heads  what serving needs: fine-tuned + pretrained head, eager PyTorch
  serving forward, fp32    classifier.serving.engine's graph (shared stages once, ONNX Runtime)
  serving forward          what serves: the version's int8 graph where accepted (classifier/serving/int8.py), else fp32
  decode+preprocess        upload bytes -> classifier.serving.imaging -> training.imaging.prepare (and training's path)
  decode+forward           upload bytes -> classifier.serving.imaging -> preprocessing -> serving forward
  12 MP photo rows         the same photo upscaled to 4032x3024 (a phone photo): decode+forward as
                           served (libjpeg decodes at 1/4 scale) and with a full-size decode instead
  HTTP round trip (--url)  POST /api/predict with the photo, measured by a client on this machine
  HTTP floor (--url)       POST /api/predict without a photo (its 400): gunicorn, Django's middleware,
                           DRF and the multipart parser alone, what any answer costs before the photo's work

Without --run-dir a 4-breed head-only model is fine-tuned once into bench/out/run-dogs4.
It then prints the issue's targets (serving forward / eager, decode+preprocess ms, HTTP p50 /
decode+forward, int8 agreement) and the preprocessing check: top-1 of the fast preprocessing vs
training's decode_image + EvalTransform on shared photos, with the largest probability difference.
Results are written to bench/out/serving_latency.json (keys rows, int8, preprocess_equality;
each row has wall-clock p50/p95 and the calling thread's CPU p50); then bench/targets.py prints
every target of issue 17, the 8-client one from bench/out/http_load.json. Numbers depend on the
machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")
os.environ.setdefault("BREEDLAB_LOCAL_CACHE", "1")
SHARED = Path(os.environ.get("BREEDLAB_SHARED_DIR", ROOT.parent / "shared"))
OUT = ROOT / "bench" / "out"


def percentiles(samples: list[float], cpu: list[float] | None = None) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    out = {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2), "n": len(ordered)}
    if cpu:
        out["cpu_p50_ms"] = round(statistics.median(cpu) * 1000, 2)
    return out


def timed(fn, repeats: int, warmup: int = 10) -> dict[str, float]:
    """Wall-clock p50/p95, and the calling thread's CPU time p50 (``cpu_p50_ms``): on a machine
    shared with other jobs the CPU time shows the work itself while the wall time also counts
    the waiting (ONNX Runtime with one thread and the decoders run on the calling thread)."""
    for _ in range(warmup):
        fn()
    samples, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return percentiles(samples, cpu)


def quick_model() -> Path:
    """A 4-breed head-only EfficientNet-Lite0 (cached in bench/out/run-dogs4)."""
    out = OUT / "run-dogs4"
    if (out / "model.safetensors").is_file():
        return out
    from training.config import TrainConfig
    from training.finetune import finetune

    data = OUT / "data-dogs4"
    for breed in ("beagle", "golden_retriever", "pug", "siberian_husky"):
        (data / breed).mkdir(parents=True, exist_ok=True)
        for photo in sorted((SHARED / "datasets/stanford-dogs-120" / breed).iterdir())[:20]:
            if not (data / breed / photo.name).exists():
                os.symlink(photo, data / breed / photo.name)
    finetune(TrainConfig(data_dir=str(data), backbone="efficientnet_lite0", head_epochs=2, finetune_epochs=0, augmentation="none", device="cpu"), out_dir=out)
    return out


def phone_jpeg(data: bytes) -> bytes:
    """The photo upscaled to a phone camera's 4032x3024, as a quality-92 JPEG (about 1 MB)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        big = img.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    big.save(out, format="JPEG", quality=92)
    return out.getvalue()


def full_size_preprocess(model, data: bytes):
    """What serving did before reduced-scale decoding: decode every pixel, orient, resize, crop."""
    import io

    import torch
    from PIL import Image

    from training.data import decode_image

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        p = model.preprocessing
        return torch.stack([model._transform(decode_image(img.convert("RGB"), p.resize_size, p.interpolation))])


def preprocess_equality(model, limit: int) -> dict:
    """Top-1 of the fp32 graph on the fast preprocessing vs training's own path, on shared photos
    (fp32, so that int8's rounding does not count as a preprocessing difference)."""
    import numpy as np

    from classifier.serving.imaging import decode_bytes

    photos = sorted((SHARED / "datasets/stanford-dogs-120").glob("*/*.jpg"))
    photos = photos[:: max(1, len(photos) // limit)][:limit]
    same, worst, worst_input = 0, 0.0, 0.0
    for path in photos:
        image = decode_bytes(path.read_bytes(), name=path.name)[0]
        fast, ref = model.preprocess([image]), model.reference_preprocess([image])
        a, b = model.forward(fast).fine[0], model.forward(ref).fine[0]
        same += int(a.argmax() == b.argmax())
        worst = max(worst, float(np.abs(a - b).max()))
        worst_input = max(worst_input, float((fast - ref).abs().max()))
    return {"photos": len(photos), "top1_equal": same, "top1_equal_fraction": round(same / max(1, len(photos)), 5),
            "max_probability_diff": worst, "max_input_diff": worst_input}


def measure(threads: int, args, run_dir: Path, photo: Path, data: bytes) -> dict:
    import numpy as np
    import torch

    from classifier.serving.engine import build_serving
    from classifier.serving.imaging import decode_bytes

    torch.set_num_threads(threads)
    cache = OUT / "serving-cache"
    fp32 = build_serving(run_dir, cache_dir=cache, threads=threads)
    assert fp32.engine == "onnxruntime", fp32.details
    model = build_serving(run_dir, cache_dir=cache, threads=threads, int8=not args.no_int8)
    image, _ = decode_bytes(data, name=photo.name)
    x = model.preprocess([image])
    fine = fp32.fine_model.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    rows = {}
    with torch.inference_mode():
        rows["eager torch forward"] = timed(lambda: fine(xc), args.repeats)
        rows["eager torch, both heads"] = timed(lambda: fp32.net(xc), args.repeats)
    rows["serving forward, fp32"] = timed(lambda: fp32.forward(x), args.repeats)
    rows["serving forward"] = timed(lambda: model.forward(x), args.repeats)
    rows["serving forward"]["precision"] = model.details.get("precision", "fp32")
    rows["decode+preprocess, 224 px JPEG"] = timed(lambda: model.preprocess([decode_bytes(data)[0]]), args.repeats)
    rows["decode+preprocess, 224 px JPEG, before (training's path)"] = timed(
        lambda: model.reference_preprocess([decode_bytes(data)[0]]), args.repeats
    )
    rows["decode+forward"] = timed(lambda: model.forward(model.preprocess([decode_bytes(data, name=photo.name)[0]])), args.repeats)
    big = phone_jpeg(data)
    few = max(10, args.repeats // 10)
    rows["decode+preprocess, 12 MP photo"] = timed(lambda: model.preprocess([decode_bytes(big)[0]]), few, 3)
    rows["decode+forward, 12 MP photo"] = timed(lambda: model.classify([decode_bytes(big)[0]]), few, 3)
    rows["decode+forward, 12 MP photo, full-size decode"] = timed(lambda: model.forward(full_size_preprocess(model, big)), few, 3)
    eager, fast = fp32.eager_forward(x), fp32.forward(x)
    rows["serving forward, fp32"]["max_abs_diff_vs_eager"] = float(np.abs(eager.fine - fast.fine).max())
    int8 = model.details.get("int8")
    if args.url:
        from bench.http_load import PredictClient

        client = PredictClient(args.url)

        def post(name: str, body: bytes) -> None:
            status, answer = client.predict(name, body)
            if status != 200:
                raise RuntimeError(f"POST /api/predict answered {status}: {answer[:200]!r}")

        rows["HTTP round trip"] = timed(lambda: post(photo.name, data), min(args.repeats, 100), warmup=5)

        def no_photo() -> None:
            boundary = "floor"
            body = f'--{boundary}\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n5\r\n--{boundary}--\r\n'.encode()
            client.conn.request("POST", "/api/predict", body=body,
                                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            response = client.conn.getresponse()
            response.read()
            if response.status != 400:
                raise RuntimeError(f"POST /api/predict without a photo answered {response.status}")

        rows["HTTP floor: POST without a photo (400)"] = timed(no_photo, args.repeats, warmup=10)
        rows["HTTP round trip, 12 MP photo"] = timed(lambda: post("phone.jpg", big), few, warmup=3)
    return {"rows": rows, "int8": int8, "equality": preprocess_equality(fp32, args.equality_photos)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--photo", type=Path, default=SHARED / "datasets/stanford-dogs-120/golden_retriever")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--url", help="base URL of a running Breedlab to time POST /api/predict")
    parser.add_argument("--no-int8", action="store_true", help="serve fp32 even where the int8 graph is accepted")
    parser.add_argument("--equality-photos", type=int, default=600, help="shared photos for the preprocessing top-1 check")
    args = parser.parse_args()

    import django

    django.setup()
    import torch

    photo = args.photo if args.photo.is_file() else sorted(args.photo.iterdir())[0]
    if not photo.is_file():
        print(f"error: {photo} is not a photo", file=sys.stderr)
        return 2
    data = photo.read_bytes()
    run_dir = args.run_dir or quick_model()
    results: dict = {
        "photo": str(photo), "run_dir": str(run_dir), "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average": os.getloadavg(), "torch": torch.__version__, "rows": {},
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    for threads in [int(t) for t in args.threads.split(",")]:
        measured = measure(threads, args, run_dir, photo, data)
        results["rows"][f"threads={threads}"] = measured["rows"]
        results.setdefault("int8", measured["int8"])
        results.setdefault("preprocess_equality", measured["equality"])

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serving_latency.json").write_text(json.dumps(results, indent=2))
    print(f"photo {photo.name}, load average {results['load_average'][0]:.2f} on {results['cpus']} CPUs")
    for key, rows in results["rows"].items():
        base = rows["eager torch forward"]["p50_ms"]
        print(f"\n{key}\n| path | p50 ms | p95 ms | CPU p50 ms | vs eager p50 |\n|---|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['p50_ms']} | {r['p95_ms']} | {r.get('cpu_p50_ms', '')} | {base / r['p50_ms']:.2f}x |")
    print(f"\nint8: {json.dumps(results['int8'])}")
    eq = results["preprocess_equality"]
    print(f"preprocessing vs training's path: top-1 equal on {eq['top1_equal']}/{eq['photos']} shared photos, "
          f"largest probability difference {eq['max_probability_diff']:.2e} (input {eq['max_input_diff']:.2e})")
    from bench.targets import print_targets

    print_targets()
    return 0


if __name__ == "__main__":
    sys.exit(main())
