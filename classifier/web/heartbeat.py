"""Worker heartbeats: each Celery worker writes "alive, consuming these queues" into Redis every
BREEDLAB_WORKER_HEARTBEAT_SECONDS, so that /api/health reads one hash instead of broadcasting
to every worker and waiting for their replies.

The hash ``breedlab:workers`` maps a worker's hostname to ``{"queues": [...], "at": <unix time>}``.
A worker's entry is fresh for three intervals; config/celery.py starts the writer thread when a
worker is ready and removes the entry when it shuts down.

Shared (web/); imports Django settings and redis only.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import redis
from django.conf import settings

log = logging.getLogger(__name__)

KEY = "breedlab:workers"


def _client() -> redis.Redis:
    timeout = settings.BREEDLAB_HEALTH_TIMEOUT
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)


def beat(hostname: str, queues: list[str], *, client: redis.Redis | None = None, now: float | None = None) -> None:
    (client or _client()).hset(KEY, hostname, json.dumps({"queues": sorted(queues), "at": now or time.time()}))


def forget(hostname: str) -> None:
    try:
        _client().hdel(KEY, hostname)
    except redis.RedisError:
        pass


def fresh_workers(*, client: redis.Redis | None = None, now: float | None = None) -> dict[str, list[str]]:
    """{hostname: queues} of the workers whose last heartbeat is at most three intervals old."""
    horizon = (now or time.time()) - 3 * settings.BREEDLAB_WORKER_HEARTBEAT_SECONDS
    workers = {}
    for name, raw in (client or _client()).hgetall(KEY).items():
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if entry.get("at", 0) >= horizon:
            workers[name.decode() if isinstance(name, bytes) else name] = list(entry.get("queues") or [])
    return workers


def start(hostname: str, queues: list[str]) -> threading.Thread:
    """The writer thread of one worker process; it logs and retries when Redis does not answer."""

    def run() -> None:
        while True:
            try:
                beat(hostname, queues)
            except redis.RedisError as exc:
                log.warning("worker heartbeat not written (%s); retrying", exc)
            time.sleep(settings.BREEDLAB_WORKER_HEARTBEAT_SECONDS)

    thread = threading.Thread(target=run, name="breedlab-worker-heartbeat", daemon=True)
    thread.start()
    return thread
