"""Decode every file of a folder with classifier.serving.imaging inside a hard address-space limit.

    python -m tests.classifier.serving.decode_under_limit FOLDER HEADROOM_MB

After Django, NumPy and Pillow are imported, RLIMIT_AS is set to the process's current virtual
size plus HEADROOM_MB, so a decoder that allocates more fails with MemoryError instead of taking
the machine down. Prints one JSON object per file ({"name", "outcome": "ok" | "rejected" |
"error", "detail"}) and finally {"peak_rss_growth_mb": ...}.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from pathlib import Path


def vm_size_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def main() -> int:
    folder, headroom_mb = Path(sys.argv[1]), int(sys.argv[2])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    import django

    django.setup()
    from classifier.serving.imaging import ImageRejected, decode_bytes

    files = sorted(folder.iterdir())
    payloads = [(f.name, f.read_bytes()) for f in files]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    limit = vm_size_bytes() + headroom_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for name, data in payloads:
        try:
            image, _fmt = decode_bytes(data, name=name)
            outcome, detail = "ok", f"{image.mode} {image.width}x{image.height}"
            del image
        except ImageRejected as exc:
            outcome, detail = "rejected", f"{exc.status} {exc.message}"
        except BaseException as exc:  # noqa: BLE001 - exactly what the test looks for
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"[:300]
        print(json.dumps({"name": name, "outcome": outcome, "detail": detail}), flush=True)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    print(json.dumps({"peak_rss_growth_mb": round(growth, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
