"""One photo, end to end: where the time of a prediction goes, and how much the serving path saves.

    .venv/bin/python bench/serving_latency.py [--run-dir DIR] [--photo FILE] [--threads 1,2]
                                              [--repeats 200] [--url http://127.0.0.1:8010] [--int8]

Rows (p50 / p95 in ms, per thread count):
  eager torch forward      the fine-tuned TransferModel alone, eager PyTorch (channels_last, inference_mode)
  eager torch, both heads  what serving needs: fine-tuned + pretrained head, eager PyTorch
  serving forward          classifier.serving.engine's graph (shared stages once, ONNX Runtime)
  serving int8 (--int8)    the same graph statically quantised to int8 (QDQ, per channel)
  decode+forward           upload bytes -> classifier.serving.imaging -> preprocessing -> serving forward
  12 MP photo rows         the same photo upscaled to 4032x3024 (a phone photo): decode+forward as
                           served (libjpeg decodes at 1/4 scale) and with a full-size decode instead
  HTTP round trip (--url)  POST /api/predict with the photo, measured by a client on this machine

Without --run-dir a 4-breed head-only model is fine-tuned once into bench/out/run-dogs4.
Results are written to bench/out/serving_latency.json; numbers depend on the machine's load.
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


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2), "n": len(ordered)}


def timed(fn, repeats: int, warmup: int = 10) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return percentiles(samples)


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
    finetune(TrainConfig(data_dir=str(data), head_epochs=2, finetune_epochs=0, augmentation="none", device="cpu"), out_dir=out)
    return out


def int8_session(model, photos: list[Path], threads: int):
    """Static int8 quantisation (QDQ, per-channel weights) calibrated on ``photos``."""
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from PIL import Image

    batches = [model.preprocess([Image.open(p).convert("RGB")]).numpy() for p in photos]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"images": x}

    src = Path(model.details["onnx"])
    pre = OUT / "int8-pre.onnx"
    dst = OUT / "int8.onnx"
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(dst), options, providers=["CPUExecutionProvider"]), np


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


def measure(threads: int, args, run_dir: Path, photo: Path, data: bytes) -> dict:
    import numpy as np
    import torch

    from classifier.serving.engine import build_serving
    from classifier.serving.imaging import decode_bytes

    torch.set_num_threads(threads)
    model = build_serving(run_dir, cache_dir=OUT / "serving-cache", threads=threads)
    assert model.engine == "onnxruntime", model.details
    image, _ = decode_bytes(data, name=photo.name)
    x = model.preprocess([image])
    fine = model.fine_model.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    rows = {}
    with torch.inference_mode():
        rows["eager torch forward"] = timed(lambda: fine(xc), args.repeats)
        rows["eager torch, both heads"] = timed(lambda: model.net(xc), args.repeats)
    rows["serving forward"] = timed(lambda: model.forward(x), args.repeats)
    rows["decode+forward"] = timed(lambda: model.forward(model.preprocess([decode_bytes(data, name=photo.name)[0]])), args.repeats)
    big = phone_jpeg(data)
    rows["decode+forward, 12 MP photo"] = timed(lambda: model.classify([decode_bytes(big)[0]]), max(10, args.repeats // 10), 3)
    rows["decode+forward, 12 MP photo, full-size decode"] = timed(
        lambda: model.forward(full_size_preprocess(model, big)), max(10, args.repeats // 10), 3
    )
    eager, fast = model.eager_forward(x), model.forward(x)
    rows["serving forward"]["max_abs_diff_vs_eager"] = float(np.abs(eager.fine - fast.fine).max())
    if args.int8:
        calib = sorted((SHARED / "datasets/stanford-dogs-120/beagle").iterdir())[:16]
        session, _ = int8_session(model, calib, threads)
        rows["serving int8"] = timed(lambda: session.run(None, {"images": x.numpy()}), args.repeats)
        agree, diffs = 0, []
        probe = sorted(Path(SHARED / "datasets/stanford-dogs-120").glob("*/*.jpg"))[::97][:48]
        for p in probe:
            xi = model.preprocess([decode_bytes(p.read_bytes())[0]])
            ref = model.forward(xi).fine[0]
            q = session.run(None, {"images": xi.numpy()})[0][0]
            agree += int(ref.argmax() == q.argmax())
            diffs.append(float(np.abs(ref - q).max()))
        rows["serving int8"].update({"top1_agreement": agree / len(probe), "max_abs_diff_vs_fp32": max(diffs)})
    if args.url:
        from bench.http_load import PredictClient

        client = PredictClient(args.url)

        def post() -> None:
            status, body = client.predict(photo.name, data)
            if status != 200:
                raise RuntimeError(f"POST /api/predict answered {status}: {body[:200]!r}")

        rows["HTTP round trip"] = timed(post, min(args.repeats, 100), warmup=5)

        def post_big() -> None:
            status, body = client.predict("phone.jpg", big)
            if status != 200:
                raise RuntimeError(f"POST /api/predict answered {status}: {body[:200]!r}")

        rows["HTTP round trip, 12 MP photo"] = timed(post_big, max(10, args.repeats // 10), warmup=3)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--photo", type=Path, default=SHARED / "datasets/stanford-dogs-120/golden_retriever")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--url", help="base URL of a running Breedlab to time POST /api/predict")
    parser.add_argument("--int8", action="store_true", help="also measure a statically quantised int8 graph")
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
    }
    for threads in [int(t) for t in args.threads.split(",")]:
        results["rows"][f"threads={threads}"] = measure(threads, args, run_dir, photo, data)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "serving_latency.json").write_text(json.dumps(results, indent=2))
    print(f"photo {photo.name}, load average {results['load_average'][0]:.2f} on {results['cpus']} CPUs")
    for key, rows in results["rows"].items():
        base = rows["eager torch forward"]["p50_ms"]
        print(f"\n{key}\n| path | p50 ms | p95 ms | vs eager p50 |\n|---|---|---|---|")
        for name, r in rows.items():
            print(f"| {name} | {r['p50_ms']} | {r['p95_ms']} | {base / r['p50_ms']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
