"""Browser journeys against the real stack: `make run`'s launcher (Redis, a Celery worker, gunicorn)
on a free port with its own storage root, driven by Playwright through Debian's chromium.

- ``stack``: one launcher for the whole session (its own SQLite database, or a fresh PostgreSQL
  database when the suite runs with DATABASE_URL=postgres://...), an administrator from
  DJANGO_SUPERUSER_*, the rate limit off, and an API token for set-up steps.
- ``page``: a fresh browser context per test; on failure a full-page screenshot and the page's
  HTML are saved under test-artifacts/e2e/ (BREEDLAB_E2E_ARTIFACTS overrides the folder;
  BREEDLAB_E2E_SCREENSHOTS=always also saves one at every named step).
- Set-up fixtures (``active_model``, ``finished_runs``) go through the JSON API, so each journey
  also runs alone; when the training journey ran first they reuse what it made.

Skipped with the reason when /usr/bin/chromium (or the playwright package) is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.services import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("BREEDLAB_E2E_CHROMIUM") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else shutil.which("chromium") or "/usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("BREEDLAB_E2E_ARTIFACTS", ROOT / "test-artifacts" / "e2e"))
START_TIMEOUT = float(os.environ.get("BREEDLAB_E2E_START_TIMEOUT", "480"))
STAFF_USER, STAFF_PASSWORD = "e2e-staff", "e2e-staff-pass-4821"
# Breeds the pretrained ImageNet head knows well, 12 photos each in the uploaded archive.
JOURNEY_BREEDS = ("beagle", "pug", "siberian_husky")
PHOTOS_PER_BREED = 12
# A real fine-tune that takes well under a minute on two CPU cores: the head from the pretrained
# rows, two head epochs, then the whole backbone unfrozen for 8 epochs (1-3 s each here), so that
# the run lasts long enough for the page (polling every 2 s) to show it move several times.
JOURNEY_CONFIG = {
    "backbone": "efficientnet_lite0", "optimizer": "adamw", "head_epochs": 2, "finetune_epochs": 8,
    "unfreeze_blocks": -1, "batch_size": 8, "early_stopping_patience": 0, "augmentation": "none",
}
# Two small, fast runs for the pages that need finished runs (run, validation, compare): CIFAR-10
# ResNet-20 at 32 px, no time budget, the head trained for epochs, no augmentation (seconds each
# even on a loaded machine); different optimizers so the comparison has something to compare.
SMALL_CONFIG = {
    "backbone": "cifar10_resnet20", "optimizer": "sgd", "image_size": 32, "budget_minutes": 0,
    "head_solver": "epochs", "head_epochs": 2, "finetune_epochs": 1, "augmentation": "none",
    "feature_views": 1, "batch_size": 8, "early_stopping_patience": 0, "num_workers": 0,
}
SMALL_CONFIG_2 = {**SMALL_CONFIG, "optimizer": "adamw", "head_epochs": 1, "finetune_epochs": 2, "unfreeze_blocks": 1}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class Stack:
    base: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen
    token: str = ""
    state: dict = field(default_factory=dict)  # what earlier journeys made (run ids, ...)

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def log_tail(self, n: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def get_json(self, path: str):
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def post(self, path: str, *, data: dict | None = None, files: dict[str, Path] | None = None):
        """POST JSON (``data``) or multipart (``files`` plus ``data`` fields) with the API token."""
        headers = {"Authorization": f"Token {self.token}"}
        if files:
            boundary = uuid.uuid4().hex
            parts = []
            for name, value in (data or {}).items():
                parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
            for name, path_ in files.items():
                parts.append(
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path_.name}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + path_.read_bytes() + b"\r\n"
                )
            body = b"".join(parts) + f"--{boundary}--\r\n".encode()
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        else:
            body = json.dumps(data or {}).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_for_run(self, run_id: int, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_tail()
            status, body = self.get_json(f"/api/runs/{run_id}")
            if status == 200 and body["status"] in ("succeeded", "failed", "cancelled"):
                assert body["status"] == "succeeded", f"{body['error']}\n{body.get('traceback', '')}"
                return body
            time.sleep(1)
        pytest.fail(f"run {run_id} did not finish in {timeout:.0f} s\n{self.log_tail()}")


def _postgres_database_for_the_stack():
    """A fresh PostgreSQL database when the suite runs on PostgreSQL; (url, drop) or (None, None)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return None, None
    import psycopg

    name = f"breedlab_e2e_{os.getpid()}"
    admin_url = re.sub(r"/[^/]*$", "/postgres", url)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return re.sub(r"/[^/]*$", f"/{name}", url), drop


@pytest.fixture(scope="session")
def playwright_browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make e2e-deps) to run the browser journeys")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: run make install")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def stack(playwright_browser, tmp_path_factory):
    """`scripts/run.py` on a free port with its own var/ folder; stopped with Ctrl-C (SIGINT) at the end."""
    var = tmp_path_factory.mktemp("e2e-var")
    port = free_port()
    drop_env = ("REDIS_URL", "SECRET_KEY", "SECRET_KEY_FILE", "DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DEBUG")
    env = {k: v for k, v in os.environ.items() if k not in drop_env and not k.startswith("BREEDLAB_")}
    env.update(
        BREEDLAB_VAR_DIR=str(var), PORT=str(port), WEB_CONCURRENCY="2", WEB_THREADS="4",
        SECRET_KEY="e2e-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFG",
        DJANGO_SUPERUSER_USERNAME=STAFF_USER, DJANGO_SUPERUSER_PASSWORD=STAFF_PASSWORD,
        BREEDLAB_RATE_LIMIT="off", BREEDLAB_HEARTBEAT_TIMEOUT="30",
    )
    if "BREEDLAB_SHARED_DIR" in os.environ:
        env["BREEDLAB_SHARED_DIR"] = os.environ["BREEDLAB_SHARED_DIR"]
    database_url, drop_database = _postgres_database_for_the_stack()
    if database_url:
        env["DATABASE_URL"] = database_url
    log = var / "stack.log"
    proc = subprocess.Popen(
        [sys.executable, "scripts/run.py"], cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    stack = Stack(base=f"http://127.0.0.1:{port}", env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"}, log=log, proc=proc)
    try:
        # Migrate, collectstatic, the admin and the first worker: about a minute on an idle machine,
        # several on two shared, busy cores.
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, f"the launcher exited:\n{stack.log_tail()}"
            try:
                status, body = _get(f"{stack.base}/api/health")
                health = json.loads(body)
                if status == 200 and health["worker"]["status"] == "ok":
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the stack did not become healthy in {START_TIMEOUT:.0f} s:\n{stack.log_tail()}")
            time.sleep(1)
        expected_database = "postgresql" if database_url else "sqlite"
        assert health["database"]["detail"] == expected_database, health
        stack.token = stack.manage("create_api_token", STAFF_USER).strip().splitlines()[-1]
        yield stack
    finally:
        stop_process(proc, 60, sig=signal.SIGINT)
        if drop_database:
            drop_database()


@pytest.fixture
def page(playwright_browser, stack, request):
    context = playwright_browser.new_context(base_url=stack.base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.shot = lambda name: _screenshot(page, request.node.name, name)  # noqa: B023
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        _screenshot(page, request.node.name, "failure", force=True)
    context.close()


def _screenshot(page, test: str, step: str, force: bool = False) -> None:
    if not force and os.environ.get("BREEDLAB_E2E_SCREENSHOTS") != "always":
        return
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stem = ARTIFACTS / f"{test}--{step}"
    try:
        page.screenshot(path=str(stem.with_suffix(".png")), full_page=True)
        stem.with_suffix(".html").write_text(page.content())
    except Exception as exc:  # a crashed page must not hide the test's own failure
        stem.with_suffix(".txt").write_text(f"no screenshot: {exc}")


def log_in(page, *, next_url: str = "/") -> None:
    page.goto(f"/admin/login/?next={next_url}")
    page.fill("#id_username", STAFF_USER)
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"**{next_url}")


@pytest.fixture(scope="session")
def dataset_archive(stanford_dogs_dir, tmp_path_factory) -> Path:
    """dogs.zip: ImageFolder layout, JOURNEY_BREEDS x PHOTOS_PER_BREED real photos."""
    path = tmp_path_factory.mktemp("e2e-archive") / "journey-dogs.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for breed in JOURNEY_BREEDS:
            for photo in sorted((stanford_dogs_dir / breed).iterdir())[:PHOTOS_PER_BREED]:
                archive.write(photo, f"{breed}/{photo.name}")
    return path


def held_out(stanford_dogs_dir: Path, breed: str) -> Path:
    """A photo of ``breed`` that is not in the archive."""
    return sorted((stanford_dogs_dir / breed).iterdir())[-1]


def _api_dataset(stack: Stack, dataset_archive: Path) -> int:
    if "dataset_id" not in stack.state:
        status, body = stack.post("/api/datasets", data={"name": "journey-dogs-api"}, files={"archive": dataset_archive})
        assert status == 201, body
        stack.state["dataset_id"] = body["id"]
    return stack.state["dataset_id"]


def _api_run(stack: Stack, dataset_id: int, config: dict) -> dict:
    status, body = stack.post("/api/runs", data={"dataset": dataset_id, "config": config})
    assert status == 201, body
    return stack.wait_for_run(body["id"])


@pytest.fixture
def active_model(stack, dataset_archive):
    """A fine-tuned model of JOURNEY_BREEDS is active (the training journey's, or one made through the API)."""
    status, body = stack.get_json("/api/models/active")
    if status == 200 and sorted(body["class_names"]) == sorted(JOURNEY_BREEDS):
        return body
    run = _api_run(stack, _api_dataset(stack, dataset_archive), JOURNEY_CONFIG)
    stack.state.setdefault("finished_runs", []).append(run["id"])
    status, body = stack.post(f"/api/models/{run['model_version']}/promote")
    assert status == 200 and body["is_active"], body
    return stack.get_json("/api/models/active")[1]


@pytest.fixture
def finished_runs(stack, dataset_archive) -> list[int]:
    """Two succeeded runs with different small configurations (earlier journeys' runs count)."""
    runs = stack.state.setdefault("finished_runs", [])
    dataset_id = stack.state.get("dataset_id")
    for config in (SMALL_CONFIG, SMALL_CONFIG_2)[len(runs):]:
        dataset_id = dataset_id or _api_dataset(stack, dataset_archive)
        runs.append(_api_run(stack, dataset_id, config)["id"])
    return runs[:2]
