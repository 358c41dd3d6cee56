"""Good and hostile requests at once, for bench/load.py --mix: what each class got back, and how fast.

Every client sends from its own loopback address (127.0.0.10, .11, ... for good clients; 127.0.1.x
for the hostile classes; Linux routes all of 127/8 to lo), so the server's per-client limits
(BREEDLAB_RATE_LIMIT, BREEDLAB_MAX_IN_FLIGHT_PER_CLIENT, BREEDLAB_FEEDBACK_RATE_LIMIT) stay at
their defaults and apply as they would to separate people: each good client paces itself under
the photo rate limit; hostile ones send as fast as they can and are refused when over it.

Classes (expected answers in EXPECTED):
  good         one real photo per POST /api/predict, each client paced under its rate limit
  bomb         four all-zero 16-bit 6300x6300 PNGs (77 KB each, 39.7 MP) per request, 2 in flight
  length       Content-Length: 300 MB on /api/predict, 64 KB sent, then wait for the answer
  chunked      a chunked body past the route's budget (/api/predict: 161 MB; /api/runs: 3 MB)
  multipart    17 photos; an 11 MB part; 16 parts of 10 MB (just under the route budget); 5000 fields
  health       GET /api/health back to back from several threads
  corrections  one browser session classifies a photo, then files "Wrong breed?" again and again
  charts       GET a finished run's page (confusion matrix), its curves.svg and a comparison
  malformed    truncated JPEG, random bytes, PNG signature + junk, empty file, GIF claiming 65535 px
"""

from __future__ import annotations

import http.client
import io
import os
import re
import select
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image

EXPECTED = {
    "good": {"200"},
    "bomb": {"200", "429"},
    "length": {"413"},
    "chunked": {"413"},
    "multipart": {"400", "413", "429"},
    "health": {"200"},
    "corrections": {"302"},
    "charts": {"200"},
    "malformed": {"400", "429"},
}
HEALTH_THREADS = 3
BIG = 300 * 1024 * 1024


def multipart(files: list[tuple[str, bytes]], fields: list[tuple[str, str]] = (), field_name: str = "image") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields]
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def zero_png_16bit(side: int = 6300) -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def malformed_images(photo: bytes) -> list[tuple[str, bytes]]:
    gif = b"GIF89a" + (65535).to_bytes(2, "little") * 2 + b"\xf7\x00\x00" + b"\x00" * 64
    return [
        ("truncated.jpg", photo[: len(photo) * 2 // 5]),
        ("random.jpg", os.urandom(50_000)),
        ("junk.png", b"\x89PNG\r\n\x1a\n" + os.urandom(4_000)),
        ("empty.jpg", b""),
        ("huge.gif", gif),
        ("text.jpg", b"this is not an image\n" * 100),
    ]


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    retry_after: int = 0
    samples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Mix:
    def __init__(self, host: str, port: int, *, seconds: float, good_clients: int, good_per_minute: float,
                 photos: list[bytes], run_ids: list[int]) -> None:
        self.host, self.port = host, port
        self.seconds = seconds
        self.good_clients = good_clients
        self.good_interval = 60.0 / good_per_minute
        self.photos = photos
        self.run_ids = run_ids
        self.tallies = {name: Tally() for name in EXPECTED}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.bomb_body = multipart([(f"zero{i}.png", zero_png_16bit()) for i in range(4)])

    # -- plumbing ---------------------------------------------------------------------------------
    def record(self, name: str, status: str, elapsed: float, headers=None, detail: bytes = b"") -> None:
        with self.lock:
            tally = self.tallies[name]
            tally.statuses[status] += 1
            tally.latencies.append(elapsed)
            if headers is not None and headers.get("Retry-After"):
                tally.retry_after += 1
            if status not in EXPECTED[name] and len(tally.samples) < 5:
                tally.samples.append(f"{status}: {detail[:200].decode(errors='replace')}")

    def connection(self, address: str) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=120, source_address=(address, 0))

    def send(self, name: str, address: str, method: str, path: str, body: bytes | None = None,
             headers: dict | None = None, conn: http.client.HTTPConnection | None = None):
        """One request (a fresh connection unless ``conn``); returns (status, headers, payload)."""
        own = conn is None
        conn = conn or self.connection(address)
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            payload = response.read()
            status, answer_headers = str(response.status), response.headers
        except (OSError, http.client.HTTPException) as exc:
            status, answer_headers, payload = type(exc).__name__, None, str(exc).encode()
            conn.close()
        self.record(name, status, time.perf_counter() - t0, answer_headers, payload)
        if own:
            conn.close()
        return status, answer_headers, payload

    def raw_refusal(self, name: str, address: str, path: str, *, chunked: bool, budget: int) -> None:
        """Send a body past ``budget`` (a lying Content-Length, or chunks) until the server answers."""
        t0 = time.perf_counter()
        status = "no answer"
        with socket.create_connection((self.host, self.port), timeout=60, source_address=(address, 0)) as sock:
            head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/octet-stream\r\n"
            head += "Transfer-Encoding: chunked\r\n\r\n" if chunked else f"Content-Length: {BIG}\r\n\r\n"
            chunk = b"\0" * 65536
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk
            try:
                sock.sendall(head.encode())
                sent = 0
                limit = budget + 2 * len(chunk) if chunked else len(chunk)
                while sent < limit and not select.select([sock], [], [], 0)[0]:
                    sock.sendall(frame)
                    sent += len(chunk)
                if chunked and sent >= limit:
                    sock.sendall(b"0\r\n\r\n")
                answer = sock.recv(4096)
                match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
                status = match.group(1).decode() if match else "no answer"
            except OSError as exc:
                status = type(exc).__name__
        self.record(name, status, time.perf_counter() - t0)

    def loop(self, pause: float, step) -> None:
        while not self.stop.is_set():
            step()
            if pause:
                self.stop.wait(pause)

    # -- the classes ------------------------------------------------------------------------------
    def good(self, i: int) -> None:
        address = f"127.0.0.{10 + i}"
        conn = self.connection(address)
        n = i
        next_at = time.perf_counter() + i * self.good_interval / max(1, self.good_clients)
        while not self.stop.is_set():
            if self.stop.wait(max(0.0, next_at - time.perf_counter())):
                break
            next_at += self.good_interval
            body, ctype = multipart([(f"good{n}.jpg", self.photos[n % len(self.photos)])])
            n += self.good_clients
            status, _h, _p = self.send("good", address, "POST", "/api/predict", body, {"Content-Type": ctype}, conn=conn)
            if not status.isdigit():
                conn = self.connection(address)
        conn.close()

    def bomb(self) -> None:
        body, ctype = self.bomb_body
        self.loop(0, lambda: self.send("bomb", "127.0.1.1", "POST", "/api/predict", body, {"Content-Type": ctype}))

    def length(self) -> None:
        self.loop(0.2, lambda: self.raw_refusal("length", "127.0.1.2", "/api/predict", chunked=False, budget=0))

    def chunked(self) -> None:
        targets = [("/api/predict", 161 * 2**20), ("/api/runs", 3 * 2**20), ("/api/runs", 3 * 2**20), ("/api/runs", 3 * 2**20)]
        n = [0]

        def step() -> None:
            path, budget = targets[n[0] % len(targets)]
            n[0] += 1
            self.raw_refusal("chunked", "127.0.1.3", path, chunked=True, budget=budget)

        self.loop(0.5, step)

    def multipart_floods(self) -> None:
        photo = self.photos[0]
        small = [(f"p{i}.jpg", photo) for i in range(17)]
        near_cap = os.urandom(10 * 2**20 - 4096)
        variants = [
            multipart(small),
            multipart([("big.jpg", os.urandom(11 * 2**20))]),
            multipart([(f"b{i}.jpg", near_cap) for i in range(16)]),
            multipart([("p.jpg", photo)], fields=[(f"f{i}", "x") for i in range(5000)]),
        ]
        n = [0]

        def step() -> None:
            body, ctype = variants[n[0] % len(variants)]
            n[0] += 1
            self.send("multipart", "127.0.1.4", "POST", "/api/predict", body, {"Content-Type": ctype})

        self.loop(1.0, step)

    def health(self, i: int) -> None:
        address = f"127.0.1.{20 + i}"
        conn = self.connection(address)
        while not self.stop.is_set():
            status, _h, _p = self.send("health", address, "GET", "/api/health", conn=conn)
            if not status.isdigit():
                conn = self.connection(address)
        conn.close()

    def corrections(self) -> None:
        address = "127.0.1.5"
        cookies: dict[str, str] = {}

        def call(method: str, path: str, body: bytes | None = None, ctype: str | None = None, record: bool = False):
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
            if ctype:
                headers["Content-Type"] = ctype
            conn = self.connection(address)
            t0 = time.perf_counter()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if record:
                    self.record("corrections", type(exc).__name__, time.perf_counter() - t0, None, str(exc).encode())
                return None, b""
            for value in response.headers.get_all("Set-Cookie") or []:
                key, _, rest = value.partition("=")
                cookies[key.strip()] = rest.split(";", 1)[0]
            conn.close()
            if record:
                self.record("corrections", str(response.status), time.perf_counter() - t0, response.headers, payload)
            return response, payload

        call("GET", "/")
        body, ctype = multipart([("dog.jpg", self.photos[0])], fields=[("csrfmiddlewaretoken", cookies.get("csrftoken", ""))])
        response, _payload = call("POST", "/", body, ctype, record=True)
        found = response is not None and re.search(r"/predictions/(\d+)/", response.headers.get("Location") or "")
        if not found:
            status = response.status if response is not None else "no answer"
            self.tallies["corrections"].notes.append(f"classifying the photo answered {status}: no flood")
            return
        pk = found.group(1)
        _response, page = call("GET", f"/predictions/{pk}/")
        labels = [v for v in re.findall(r'<option value="([^"]+)"', page.decode()) if v] or ["__other__"]
        n = [0]

        def step() -> None:
            label = labels[n[0] % len(labels)]
            n[0] += 1
            form = f"csrfmiddlewaretoken={cookies.get('csrftoken', '')}&correct_label={label}".encode()
            call("POST", f"/predictions/{pk}/feedback/", form, "application/x-www-form-urlencoded", record=True)

        self.loop(0.1, step)

    def charts(self) -> None:
        if not self.run_ids:
            self.tallies["charts"].notes.append("no finished run: chart pages not exercised")
            return
        run = self.run_ids[0]
        pages = [f"/runs/{run}/", f"/runs/{run}/curves.svg"]
        if len(self.run_ids) >= 2:
            pages.append(f"/runs/compare/?ids={run},{self.run_ids[1]}")
        n = [0]

        def step() -> None:
            path = pages[n[0] % len(pages)]
            n[0] += 1
            self.send("charts", "127.0.1.6", "GET", path)

        self.loop(0.05, step)

    def malformed(self) -> None:
        bad = malformed_images(self.photos[0])
        n = [0]

        def step() -> None:
            body, ctype = multipart([bad[n[0] % len(bad)]])
            n[0] += 1
            self.send("malformed", "127.0.1.7", "POST", "/api/predict", body, {"Content-Type": ctype})

        self.loop(0.3, step)

    # -- running ----------------------------------------------------------------------------------
    def run(self) -> float:
        targets = [(self.good, (i,)) for i in range(self.good_clients)]
        targets += [(self.bomb, ()), (self.bomb, ()), (self.length, ()), (self.chunked, ()), (self.multipart_floods, ()),
                    (self.corrections, ()), (self.charts, ()), (self.malformed, ())]
        targets += [(self.health, (i,)) for i in range(HEALTH_THREADS)]
        threads = [threading.Thread(target=fn, args=args, daemon=True) for fn, args in targets]
        start = time.perf_counter()
        for t in threads:
            t.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        for t in threads:
            t.join(180)
        return time.perf_counter() - start

    def report(self) -> dict:
        classes = {}
        for name, tally in self.tallies.items():
            ordered = sorted(tally.latencies)
            unexpected = sum(c for s, c in tally.statuses.items() if s not in EXPECTED[name])
            classes[name] = {
                "requests": len(ordered),
                "statuses": dict(sorted(tally.statuses.items())),
                "expected": sorted(EXPECTED[name]),
                "unexpected": unexpected,
                "with_retry_after": tally.retry_after,
                "p50_ms": percentile_ms(ordered, 0.50),
                "p95_ms": percentile_ms(ordered, 0.95),
                "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
                "unexpected_samples": tally.samples,
                "notes": tally.notes,
            }
        return classes


def percentile_ms(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of sorted seconds, in milliseconds."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] * 1000, 1)
