"""Concurrent predictions against a running Breedlab for a fixed time: errors, p50/p95, throughput.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 [--clients 8] [--seconds 30]
                                   [--max-requests 20000] [--photos DIR ...]

Each of ``--clients`` threads keeps one HTTP connection and POSTs real photos to /api/predict
one after another until ``--seconds`` have passed or ``--max-requests`` have been sent in all.
Loopback addresses only (127.0.0.1, ::1, localhost): this is a load generator, not a tool to
point at someone else's server. Any answer other than 200 counts as an error (429 means the
server's rate limit is on: start it with BREEDLAB_RATE_LIMIT=off). Prints and writes
bench/out/load.json; exit code 1 when any request failed, 2 for bad options.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("BREEDLAB_SHARED_DIR", ROOT.parent / "shared"))
DEFAULT_PHOTOS = [SHARED / "datasets/stanford-dogs-120" / b for b in ("beagle", "pug", "siberian_husky", "golden_retriever")]
OUT = ROOT / "bench" / "out"
MAX_CLIENTS, MAX_SECONDS, MAX_REQUESTS = 64, 600, 200_000


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def loopback_host(url: str) -> tuple[str, int] | None:
    parsed = urlparse(url)
    if parsed.scheme != "http" or not parsed.hostname:
        return None
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parsed.hostname, parsed.port or 80)}
    except socket.gaierror:
        return None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        return None
    return parsed.hostname, parsed.port or 80


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_load(host: str, port: int, photos: list[Path], *, clients: int, seconds: float, max_requests: int) -> dict:
    bodies = [multipart(p.name, p.read_bytes()) for p in photos]
    lock = threading.Lock()
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    sent = [0]
    ready = threading.Barrier(clients + 1)
    deadline = [0.0]

    def take_ticket() -> int | None:
        with lock:
            if sent[0] >= max_requests or time.perf_counter() >= deadline[0]:
                return None
            sent[0] += 1
            return sent[0]

    def client(i: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        ready.wait()
        while (ticket := take_ticket()) is not None:
            body, content_type = bodies[(ticket + i) % len(bodies)]
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                payload = response.read()
                status = str(response.status)
                if response.status != 200:
                    detail = payload[:200].decode(errors="replace")
                    with lock:
                        errors.append(f"{response.status}: {detail}")
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=60)
                with lock:
                    errors.append(f"{status}: {exc}")
            elapsed = time.perf_counter() - t0
            with lock:
                latencies.append(elapsed)
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    ready.wait()
    for t in threads:
        t.join(seconds + 120)
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    ok = statuses.get("200", 0)
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(ordered),
        "ok": ok,
        "errors": len(ordered) - ok,
        "statuses": statuses,
        "error_samples": errors[:5],
        "throughput_rps": round(ok / wall, 2) if wall else None,
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 1) if ordered else None,
        "p95_ms": round(percentile(ordered, 0.95) * 1000, 1) if ordered else None,
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1) if ordered else None,
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running site (loopback only)")
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients, 1..{MAX_CLIENTS}")
    parser.add_argument("--seconds", type=float, default=30.0, help=f"how long to send, up to {MAX_SECONDS}")
    parser.add_argument("--max-requests", type=int, default=20_000, help=f"stop after this many, up to {MAX_REQUESTS}")
    parser.add_argument("--photos", type=Path, nargs="*", default=DEFAULT_PHOTOS, help="folders of photos to send")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        return fail(f"--clients must be between 1 and {MAX_CLIENTS}")
    if not 0 < args.seconds <= MAX_SECONDS:
        return fail(f"--seconds must be more than 0 and at most {MAX_SECONDS}")
    if not 1 <= args.max_requests <= MAX_REQUESTS:
        return fail(f"--max-requests must be between 1 and {MAX_REQUESTS}")
    target = loopback_host(args.url)
    if target is None:
        return fail(f"--url {args.url!r} is not an http:// URL on this machine's loopback interface")
    photos = [p for folder in args.photos if folder.is_dir() for p in sorted(folder.iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")][:200]
    if not photos:
        return fail(f"no photos in {', '.join(map(str, args.photos))} (set BREEDLAB_SHARED_DIR or --photos)")
    host, port = target
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return fail(f"nothing answers at {args.url}: {exc}")
    result = {"url": args.url, "photos": len(photos), "cpus": os.cpu_count(), "load_average_before": os.getloadavg()}
    result.update(run_load(host, port, photos, clients=args.clients, seconds=args.seconds, max_requests=args.max_requests))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0 if result["errors"] == 0 and result["requests"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
