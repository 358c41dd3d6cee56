"""Eight clients at once: photos per second through HTTP vs the bare model's best batched throughput.

    .venv/bin/python bench/http_load.py --url http://127.0.0.1:8010 [--clients 8] [--seconds 20]
                                        [--run-dir DIR] [--photos DIR]

1. Bare model: classifier.serving.engine's graph (ONNX Runtime, all cores) on preprocessed batches of
   1..32 photos; the best photos/s of those batch sizes.
2. HTTP: ``--clients`` threads, each with its own keep-alive connection (and, against a local
   server, its own loopback address 127.0.0.20+i, so each is one client of the per-client limits),
   POST /api/predict one photo at a time for ``--seconds``; photos/s, p50/p95 latency, and any
   non-200 answer.

Start the server with the rate limit off, e.g.
    BREEDLAB_RATE_LIMIT=off BREEDLAB_VAR_DIR=/tmp/bl-var PORT=8010 .venv/bin/python scripts/run.py
and an active model version. Writes bench/out/http_load.json (keys http, bare_model, http_vs_bare),
then prints every target of issue 17 (bench/targets.py; the single-photo ones from
bench/out/serving_latency.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("BREEDLAB_SHARED_DIR", ROOT.parent / "shared"))
OUT = ROOT / "bench" / "out"


class PredictClient:
    """POST /api/predict over one keep-alive connection (the standard library only)."""

    def __init__(self, url: str, source: str | None = None) -> None:
        parsed = urlparse(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        # Each client its own loopback address: eight people, not one person with eight tabs (the
        # server bounds requests in flight per client, BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT).
        self.source = (source, 0) if source else None
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=60, source_address=self.source)

    def predict(self, name: str, data: bytes) -> tuple[int, bytes]:
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))}
        for attempt in range(2):
            try:
                self.conn.request("POST", "/api/predict", body=body, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = self._connect()
                if attempt:
                    raise
        raise AssertionError("unreachable")


def bare_throughput(run_dir: Path, photos: list[Path]) -> dict:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("BREEDLAB_LOCAL_CACHE", "1")
    import django

    django.setup()
    import torch

    from classifier.serving.engine import build_serving
    from classifier.serving.imaging import decode_bytes

    threads = os.cpu_count() or 1
    model = build_serving(run_dir, cache_dir=OUT / "serving-cache", threads=threads, int8=os.environ.get("BREEDLAB_INT8", "on") not in ("off", "0", "false", "no"))
    images = [decode_bytes(p.read_bytes())[0] for p in photos[:32]]
    x = model.preprocess(images)
    best, table = None, {}
    for batch in (1, 4, 8, 16, 32):
        xb = x[:batch]
        for _ in range(3):
            model.forward(xb)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 3.0:
            model.forward(xb)
            n += batch
        rate = n / (time.perf_counter() - t0)
        table[batch] = round(rate, 1)
        best = max(best or 0, rate)
    # With decoding and preprocessing included (what a request also pays), batch 8.
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 3.0:
        model.forward(model.preprocess([decode_bytes(p.read_bytes())[0] for p in photos[:8]]))
        n += 8
    return {"threads": threads, "photos_per_s_by_batch": table, "best_photos_per_s": round(best, 1),
            "decode_and_forward_batch8_photos_per_s": round(n / (time.perf_counter() - t0), 1), "engine": model.engine,
            "precision": model.details.get("precision"),
            "torch_threads": torch.get_num_threads()}


def http_throughput(url: str, photos: list[Path], clients: int, seconds: float) -> dict:
    payloads = [(p.name, p.read_bytes()) for p in photos]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        local = urlparse(url).hostname in ("127.0.0.1", "localhost")
        client = PredictClient(url, f"127.0.0.{20 + i}" if local else None)
        client.predict(*payloads[i % len(payloads)])  # warm the connection (and the model)
        start.wait()
        k = i
        while time.perf_counter() < deadline[0]:
            name, data = payloads[k % len(payloads)]
            t0 = time.perf_counter()
            status, _ = client.predict(name, data)
            with lock:
                latencies.append(time.perf_counter() - t0)
                statuses[status] = statuses.get(status, 0) + 1
            k += clients

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    ordered = sorted(latencies)
    return {
        "clients": clients, "seconds": round(elapsed, 2), "requests": len(ordered), "statuses": statuses,
        "photos_per_s": round(statuses.get(200, 0) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 1) if ordered else None,
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1) if ordered else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--run-dir", type=Path, help="the model the server serves (for the bare-model number)")
    parser.add_argument("--photos", type=Path, default=SHARED / "datasets/stanford-dogs-120/golden_retriever")
    args = parser.parse_args()
    if not args.photos.is_dir():
        print(f"error: {args.photos} is not a folder of photos", file=sys.stderr)
        return 2
    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:32]
    result = {"load_average": os.getloadavg(), "cpus": os.cpu_count(), "run_dir": str(args.run_dir) if args.run_dir else None,
              "measured_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "http": http_throughput(args.url, photos, args.clients, args.seconds)}
    if args.run_dir:
        result["bare_model"] = bare_throughput(args.run_dir, photos)
        result["http_vs_bare"] = round(result["http"]["photos_per_s"] / result["bare_model"]["best_photos_per_s"], 3)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "http_load.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if "http_vs_bare" in result:
        met = "met" if result["http_vs_bare"] >= 0.8 else "NOT met"
        print(f"\nHTTP photos/s with {args.clients} clients / bare forward's best batched photos/s = "
              f"{result['http']['photos_per_s']} / {result['bare_model']['best_photos_per_s']} = {result['http_vs_bare']} "
              f"(aim >= 0.8: {met}); decode+forward batch 8: {result['bare_model']['decode_and_forward_batch8_photos_per_s']} photos/s")
    from bench.targets import print_targets

    print_targets()
    return 0 if set(result["http"]["statuses"]) <= {200} else 1


if __name__ == "__main__":
    sys.exit(main())
