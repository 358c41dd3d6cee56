"""`make run`'s launcher as a user meets it: start, use the site, Ctrl-C, nothing left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_make_run_serves_every_page_with_a_connected_worker_and_ctrl_c_stops_everything(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SECRET_KEY", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(BREEDLAB_VAR_DIR=str(tmp_path / "var"), PORT=str(port), WEB_CONCURRENCY="1")
    proc = subprocess.Popen(
        [sys.executable, "scripts/run.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            try:
                status, body = _get(f"{base}/api/health")
                health = json.loads(body)
                # gunicorn answers (200, "degraded") a few seconds before the workers are ready and
                # have written their first heartbeat (at worker_ready): wait for that, within the deadline.
                if status == 200 and health.get("worker", {}).get("status") == "ok":
                    break
            except (OSError, json.JSONDecodeError):  # not listening yet, or too busy starting to answer in time
                pass
            time.sleep(1)
        assert health is not None and health["status"] == "ok", health
        assert health["worker"]["status"] == "ok"
        for page in ("/", "/runs/", "/models/", "/datasets/", "/admin/login/"):
            status, body = _get(base + page)
            assert status == 200, page
        status, _ = _get(f"{base}/static/css/breedlab.css")
        assert status == 200
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # redis, two celery workers, gunicorn (+ their workers)
        queues = [c.cmdline()[c.cmdline().index("-Q") + 1] for c in children if "-Q" in c.cmdline()]
        assert "training" in queues and "maintenance" in queues
    finally:
        os.killpg(proc.pid, signal.SIGINT) if proc.poll() is None else None
        output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, output
    assert "Created administrator 'admin' with password:" in output
    time.sleep(0.5)
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"still running after Ctrl-C: {[c.cmdline() for c in left]}"
