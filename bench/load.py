"""Load against a running Breedlab for a fixed time: good predictions alone, or mixed with hostile requests.

Good predictions alone (errors, p50/p95, throughput):

    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 [--clients 8] [--seconds 30]
                                   [--max-requests 20000] [--photos DIR ...]

Each of ``--clients`` threads keeps one HTTP connection and POSTs real photos to /api/predict
one after another until ``--seconds`` have passed or ``--max-requests`` have been sent in all.
Any answer other than 200 counts as an error (429 means the server's rate limit is on: start it
with BREEDLAB_RATE_LIMIT=off). Writes bench/out/load.json.

Good and hostile requests mixed (bench/load_mix.py lists the classes), one line from a fresh stack:

    nice -n 5 .venv/bin/python bench/load.py --mix --start-stack --port 8713 --seconds 60

``--start-stack`` starts `make run`'s launcher (scripts/run.py) on ``--port`` with its own storage
root (``--var-dir``, default /tmp/breedlab-load-PORT), seeds a finished run for the chart pages
unless two exist (``manage.py import_dataset`` of five shared breeds, two short ``manage.py finetune
--wait`` runs; ``--no-seed`` skips them), and stops the stack at the end. Without it, ``--url`` names a
running stack (its charts need a finished run). The rate limits stay at the server's defaults:
every client sends from its own loopback address and good clients pace themselves at
``--good-per-minute`` (default 50, under BREEDLAB_RATE_LIMIT's 60/m). Reports per class the
answers' statuses, those with Retry-After, p50/p95; the gunicorn workers' RSS before, at peak and
after (psutil, every 0.1 s); writes bench/out/load-mixed.json. Exit code 1 when a good request got
anything but 200, a hostile one got an answer outside its class's expected statuses, or a worker died.

Loopback addresses only (127.0.0.1, ::1, localhost): this is a load generator, not a tool to point
at someone else's server. Exit code 2 for bad options.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_mix import Mix, multipart, percentile_ms  # noqa: E402
from load_stack import RssWatch, Stack, finished_run_ids, gunicorn_workers, seed_run  # noqa: E402

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


def run_load(host: str, port: int, photos: list[Path], *, clients: int, seconds: float, max_requests: int) -> dict:
    bodies = [multipart([(p.name, p.read_bytes())]) for p in photos]
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
        "p50_ms": percentile_ms(ordered, 0.50),
        "p95_ms": percentile_ms(ordered, 0.95),
        "p99_ms": percentile_ms(ordered, 0.99),
        "max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the running site (loopback only)")
    parser.add_argument("--clients", type=int, default=8, help=f"concurrent clients, 1..{MAX_CLIENTS}")
    parser.add_argument("--seconds", type=float, default=30.0, help=f"how long to send, up to {MAX_SECONDS}")
    parser.add_argument("--max-requests", type=int, default=20_000, help=f"stop after this many, up to {MAX_REQUESTS}")
    parser.add_argument("--photos", type=Path, nargs="*", default=DEFAULT_PHOTOS, help="folders of photos to send")
    mix = parser.add_argument_group("mixed good and hostile requests")
    mix.add_argument("--mix", action="store_true", help="good predictions and hostile requests at once (bench/load_mix.py)")
    mix.add_argument("--good-clients", type=int, default=4, help="good clients, each from its own address (1..32)")
    mix.add_argument("--good-per-minute", type=float, default=50.0, help="photos each good client sends per minute")
    mix.add_argument("--start-stack", action="store_true", help="start make run's launcher on --port, stop it at the end")
    mix.add_argument("--port", type=int, default=8713, help="the port for --start-stack")
    mix.add_argument("--var-dir", type=Path, help="storage root for --start-stack (default /tmp/breedlab-load-PORT)")
    mix.add_argument("--no-seed", action="store_true", help="with --start-stack: do not train a run for the chart pages")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= MAX_CLIENTS:
        return fail(f"--clients must be between 1 and {MAX_CLIENTS}")
    if not 0 < args.seconds <= MAX_SECONDS:
        return fail(f"--seconds must be more than 0 and at most {MAX_SECONDS}")
    if not 1 <= args.max_requests <= MAX_REQUESTS:
        return fail(f"--max-requests must be between 1 and {MAX_REQUESTS}")
    if not 1 <= args.good_clients <= 32 or not 0 < args.good_per_minute <= 6000:
        return fail("--good-clients must be between 1 and 32 and --good-per-minute between 0 and 6000")
    if args.start_stack and not (args.mix and 0 < args.port < 65536):
        return fail("--start-stack goes with --mix and a --port between 1 and 65535")
    if args.start_stack:
        args.url = f"http://127.0.0.1:{args.port}"
    target = loopback_host(args.url)
    if target is None:
        return fail(f"--url {args.url!r} is not an http:// URL on this machine's loopback interface")
    photos = [p for folder in args.photos if folder.is_dir() for p in sorted(folder.iterdir())
              if p.suffix.lower() in (".jpg", ".jpeg", ".png")][:200]
    if not photos:
        return fail(f"no photos in {', '.join(map(str, args.photos))} (set BREEDLAB_SHARED_DIR or --photos)")
    host, port = target
    if args.mix:
        return run_mixed(args, host, port, photos)
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


def run_mixed(args: argparse.Namespace, host: str, port: int, photos: list[Path]) -> int:
    stack = None
    if args.start_stack:
        with socket.socket() as probe:
            in_use = probe.connect_ex((host, port)) == 0
        if in_use:
            return fail(f"port {port} is already in use: stop what runs there or choose another --port")
        stack = Stack(port=port, var_dir=args.var_dir or Path(f"/tmp/breedlab-load-{port}"))
        print(f"starting the stack on {args.url} (log: {stack.var_dir / 'stack.log'})", flush=True)
        try:
            stack.start()
        except RuntimeError as exc:
            stack.stop()
            return fail(str(exc))
    else:
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as exc:
            return fail(f"nothing answers at {args.url}: {exc}")
    try:
        if stack is not None and not args.no_seed and len(finished_run_ids(args.url)) < 2:
            print("training two short runs for the chart pages (manage.py import_dataset, finetune --wait)", flush=True)
            try:
                seed_run(stack, SHARED / "datasets/stanford-dogs-120", runs=2 - len(finished_run_ids(args.url)))
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                return fail(f"seeding the chart runs failed: {exc}")
        workers = gunicorn_workers(port)
        if not workers:
            return fail(f"no gunicorn worker is bound to port {port} on this machine (needed for the RSS figures)")
        bodies = [p.read_bytes() for p in photos]
        warm = run_load(host, port, photos[:8], clients=len(workers), seconds=3, max_requests=4 * len(workers))
        time.sleep(2)
        health_alone = health_latency(host, port)
        load_before = os.getloadavg()
        watch = RssWatch(workers).start()
        mixed = Mix(host, port, seconds=args.seconds, good_clients=args.good_clients, good_per_minute=args.good_per_minute,
                    photos=bodies, run_ids=finished_run_ids(args.url))
        wall = mixed.run()
        time.sleep(2)
        rss = watch.stop()
        classes = mixed.report()
    finally:
        if stack is not None:
            stack.stop()
    good = classes["good"]
    result = {
        "url": args.url, "started_stack": stack is not None, "seconds": round(wall, 1), "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before], "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "good_clients": args.good_clients, "good_per_minute_each": args.good_per_minute,
        "warm_up": {"requests": warm["requests"], "errors": warm["errors"]},
        "health_alone": health_alone,
        "good_requests": good["requests"], "good_errors": good["unexpected"],
        "good_p50_ms": good["p50_ms"], "good_p95_ms": good["p95_ms"],
        "worker_rss": rss, "classes": classes,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load-mixed.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(markdown_table(classes))
    failed = any(c["unexpected"] for c in classes.values()) or not rss["all_workers_alive"] or good["requests"] == 0
    return 1 if failed else 0


def health_latency(host: str, port: int, count: int = 50) -> dict:
    """GET /api/health ``count`` times in a row on one connection, before the mix starts."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    latencies, statuses = [], {}
    for _ in range(count):
        t0 = time.perf_counter()
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
    conn.close()
    ordered = sorted(latencies)
    return {"requests": count, "statuses": statuses, "p50_ms": percentile_ms(ordered, 0.5), "p95_ms": percentile_ms(ordered, 0.95)}


def markdown_table(classes: dict) -> str:
    rows = ["| class | requests | answers | with Retry-After | unexpected | p50 ms | p95 ms |", "|---|---:|---|---:|---:|---:|---:|"]
    for name, c in classes.items():
        answers = ", ".join(f"{s}: {n}" for s, n in c["statuses"].items()) or "-"
        rows.append(f"| {name} | {c['requests']} | {answers} | {c['with_retry_after']} | {c['unexpected']} | {c['p50_ms']} | {c['p95_ms']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
