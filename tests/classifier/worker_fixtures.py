"""Helpers for tests that start real Celery worker processes: the environment they share with this
test process (database, storage roots), the broker this process sends to, and waiting on them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from tests.services import start_worker, stop_process

SECRET_KEY = "integration-test-secret-key-0123456789abcdefghijklmnop"


def database_url_for_other_processes() -> str:
    """The URL of the test database this process uses, for a worker process to share it."""
    conf = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{conf['NAME']}"
    user = conf.get("USER") or ""
    password = f":{conf['PASSWORD']}" if conf.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    return f"postgres://{auth}{conf.get('HOST') or '127.0.0.1'}:{conf.get('PORT') or 5432}/{conf['NAME']}"


def worker_env(*, redis_url: str, settings, var_dir: Path, **extra: Any) -> dict[str, str]:
    """A worker's environment: this test's database, broker and storage roots, plus ``extra``."""
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url_for_other_processes(),
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET_KEY,
        "BREEDLAB_VAR_DIR": str(var_dir),
        "BREEDLAB_RUNS_ROOT": str(settings.RUNS_ROOT),
        "BREEDLAB_DATASETS_ROOT": str(settings.DATASETS_ROOT),
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env


@contextlib.contextmanager
def celery_sending_to(url: str) -> Iterator[Any]:
    """Point this process's Celery app at the broker ``url`` for the duration of the block."""
    from config.celery import app

    def use(broker_url: str) -> None:
        app.conf.broker_url = broker_url
        app._pool = None  # connection and producer pools are rebuilt for the new URL
        app.amqp._producer_pool = None

    previous = app.conf.broker_url
    use(url)
    try:
        yield app
    finally:
        use(previous)


class WorkerGroup:
    """Starts real workers, each logging to its own file (``proc.log``); ``stop_all`` stops them."""

    def __init__(self, tmp_path: Path, env: Callable[[str], dict[str, str]]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.procs: list = []

    def start(self, name: str):
        log = self.tmp_path / f"worker-{name}-{len(self.procs)}.log"
        proc = start_worker(env=self.env(name), name=name, log=log)
        proc.log = log
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop_process(proc)


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, procs=()) -> Any:
    """Poll ``predicate`` until it returns something true; fail with the workers' logs when one of
    ``procs`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"worker died while waiting for {what}:\n{proc.log.read_text()[-4000:]}")
        time.sleep(0.3)
    logs = "\n".join(proc.log.read_text()[-3000:] for proc in procs)
    pytest.fail(f"timed out waiting for {what}\n{logs}")
