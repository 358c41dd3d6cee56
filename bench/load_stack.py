"""`make run`'s stack for bench/load.py --mix: start it (or find a running one), seed a run, watch worker RSS.

- ``Stack.start``: scripts/run.py (the launcher `make run` runs) on a port of its own with its own
  storage root, waits until /api/health answers 200; ``stop`` sends SIGINT to its process group
  and waits, as Ctrl-C would.
- ``seed_run``: ``manage.py import_dataset`` of a few shared breeds and two short ``manage.py finetune
  --wait`` runs, so that the chart pages have runs to draw and compare (skipped when two have finished).
- ``gunicorn_workers``: the worker processes of the gunicorn bound to PORT (their command line
  names the bind address; a worker's parent is the gunicorn master).
- ``RssWatch``: samples those workers' resident memory every 0.1 s: before, peak, after, per pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SEED_DATASET = "bench-load-dogs5"
SEED_BREEDS = ("beagle", "pug", "siberian_husky", "golden_retriever", "chihuahua")


def get_json(url: str, timeout: float = 10) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


class Stack:
    """scripts/run.py in its own process group, its log in VAR/stack.log."""

    def __init__(self, *, port: int, var_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.var_dir = var_dir
        self.env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
        self.env.update(BREEDLAB_VAR_DIR=str(var_dir), PORT=str(port), **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        self.log = (self.var_dir / "stack.log").open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "scripts/run.py"], cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the stack exited with code {self.proc.returncode}; see {self.var_dir / 'stack.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not answer /api/health in {timeout:.0f} s; see {self.var_dir / 'stack.log'}")
            try:
                if get_json(f"http://127.0.0.1:{self.port}/api/health", timeout=5)[0] == 200:
                    return
            except OSError:  # not listening yet
                pass
            time.sleep(1)

    def manage(self, *args: str, timeout: float = 900) -> None:
        """manage.py beside the running stack (settings find its secret key and Redis under the var dir)."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed (code {result.returncode}); see {self.var_dir / 'stack.log'}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def finished_run_ids(base_url: str) -> list[int]:
    status, payload = get_json(f"{base_url}/api/runs")
    if status != 200:
        return []
    rows = payload.get("results", payload) if isinstance(payload, dict) else payload
    return [row["id"] for row in rows or [] if row.get("status") == "succeeded" and row.get("id")]


def seed_run(stack: Stack, photos_root: Path, *, runs: int = 2, per_class: int = 20) -> None:
    """A five-breed dataset (``per_class`` photos each, copied: the import refuses symlinks) and
    ``runs`` short runs on it (the first also fine-tunes an epoch; two make a comparison)."""
    folder = stack.var_dir / "seed-photos"
    for breed in SEED_BREEDS:
        (folder / breed).mkdir(parents=True, exist_ok=True)
        for photo in sorted((photos_root / breed).iterdir())[:per_class]:
            copy = folder / breed / photo.name
            if not copy.exists():
                shutil.copyfile(photo, copy)
    stack.manage("import_dataset", SEED_DATASET, str(folder))
    for i in range(runs):
        stack.manage(
            "finetune", "--dataset", SEED_DATASET, "--backbone", "efficientnet_lite0", "--head-solver", "epochs",
            "--head-epochs", "3", "--finetune-epochs", "1" if i == 0 else "0", "--unfreeze-blocks", "1", "--wait", "--poll", "2",
        )


def gunicorn_workers(port: int) -> list[psutil.Process]:
    """The gunicorn workers bound to PORT (forked workers keep the master's command line)."""
    serving = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        if any("gunicorn" in a for a in argv) and any(a.endswith(f":{port}") for a in argv):
            serving.append(proc)
    pids = {p.pid for p in serving}
    return [p for p in serving if p.ppid() in pids]


class RssWatch:
    """Resident memory of the given processes: ``before`` at start, ``peak`` while it runs, ``after`` at stop."""

    def __init__(self, processes: list[psutil.Process], interval: float = 0.1) -> None:
        self.processes = processes
        self.interval = interval
        self.before = {p.pid: self._rss(p) for p in processes}
        self.peak = dict(self.before)
        self.after: dict[int, int | None] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _rss(proc: psutil.Process) -> int | None:
        try:
            return proc.memory_info().rss
        except psutil.Error:
            return None

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            for proc in self.processes:
                rss = self._rss(proc)
                if rss is not None:
                    self.peak[proc.pid] = max(self.peak.get(proc.pid) or 0, rss)

    def start(self) -> RssWatch:
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._done.set()
        self._thread.join()
        self.after = {p.pid: self._rss(p) for p in self.processes}
        mib = 2**20
        rows = {}
        for pid in self.before:
            before, peak, after = self.before[pid], self.peak[pid], self.after[pid]
            rows[str(pid)] = {
                "before_mib": round(before / mib) if before else None,
                "peak_mib": round(peak / mib) if peak else None,
                "after_mib": round(after / mib) if after else None,
                "peak_growth_mib": round((peak - before) / mib) if before and peak else None,
                "alive_at_end": after is not None,
            }
        growths = [r["peak_growth_mib"] for r in rows.values() if r["peak_growth_mib"] is not None]
        return {"workers": rows, "max_peak_growth_mib": max(growths) if growths else None,
                "all_workers_alive": all(r["alive_at_end"] for r in rows.values())}
