"""The real stack (`make run`'s launcher, gunicorn) under the decompression attack of issue 13.

Four concurrent POST /api/predict requests, each carrying four all-zero 16-bit 6300x6300 PNGs
(~77 KB each, 39.7 MP: under the pixel limit). The gunicorn worker's RSS may grow by less than
500 MB over its warm state, and every answer is a 200 or a clear 4xx ({"error": ...}).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
from PIL import Image

from tests.services import free_port, stop_process

ROOT = Path(__file__).resolve().parents[1].parent

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_GROWTH_BYTES = 500 * 1024 * 1024


def _request(url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 180) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _multipart(files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: image/png\r\n\r\n".encode() + data + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _zero_png_16bit(side: int = 6300) -> bytes:
    buffer = io.BytesIO()
    Image.new("I;16", (side, side)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 60)).save(buffer, format="PNG")
    return buffer.getvalue()


def _gunicorn_workers(launcher: psutil.Process) -> list[psutil.Process]:
    workers = []
    for child in launcher.children(recursive=True):
        try:
            cmd = " ".join(child.cmdline())
            if "gunicorn" in cmd and child.parent() and "gunicorn" in " ".join(child.parent().cmdline()):
                workers.append(child)
        except psutil.Error:
            pass
    return workers


def test_four_concurrent_batches_of_huge_blank_pngs_keep_the_worker_under_500_mb_growth(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SECRET_KEY", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(BREEDLAB_VAR_DIR=str(tmp_path / "var"), PORT=str(port), WEB_CONCURRENCY="1", WEB_THREADS="4")
    log = (tmp_path / "stack.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "scripts/run.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "stack.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the stack did not answer /api/health in 180 s"
            try:
                status, _ = _request(f"{base}/api/health", timeout=5)
                if status == 200:
                    break
            except OSError:  # not listening yet, or busy starting (URLError and timeouts are OSErrors)
                pass
            time.sleep(1)
        (worker,) = _gunicorn_workers(psutil.Process(proc.pid))
        # Warm state: the serving model loaded and one ordinary photo answered.
        body, ctype = _multipart([("warm.png", _small_png())])
        warm_status, warm_body = _request(f"{base}/api/predict", body, ctype)
        model_missing = warm_status == 503 and _request(f"{base}/api/models/active")[0] == 404
        assert warm_status == 200 or model_missing, warm_body[:500]
        time.sleep(1)
        baseline = worker.memory_info().rss

        attack, ctype = _multipart([(f"zero{i}.png", _zero_png_16bit()) for i in range(4)])
        assert len(attack) < 400_000
        answers: list[tuple[int, bytes]] = []
        peak = baseline
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                try:
                    peak = max(peak, worker.memory_info().rss)
                except psutil.Error:
                    return
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        threads = [threading.Thread(target=lambda: answers.append(_request(f"{base}/api/predict", attack, ctype))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        done.set()
        sampler.join()
        assert worker.is_running(), "the gunicorn worker died under the attack"
        assert len(answers) == 4
        for status, payload in answers:
            clear_4xx = 400 <= status < 500 and "error" in json.loads(payload)
            no_model = model_missing and status == 503 and "model" in json.loads(payload)["error"].lower()
            assert status == 200 or clear_4xx or no_model, (status, payload[:300])
        growth = peak - baseline
        print(f"worker RSS: baseline {baseline / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, growth {growth / 2**20:.0f} MiB")
        assert growth < MAX_GROWTH_BYTES, f"worker RSS grew by {growth / 2**20:.0f} MiB under the attack"
    finally:
        stop_process(proc, 60, sig=signal.SIGINT)
        log.close()
