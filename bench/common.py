"""Shared helpers for the benchmark scripts (not tests; they measure wall time on this machine)."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))

RESULTS_MD = BENCH_DIR / "RESULTS.md"
RESULTS_JSON_DIR = BENCH_DIR / "results"
OUT_DIR = BENCH_DIR / "out"  # run directories (git-ignored)

DOGS_20 = (
    "chihuahua pomeranian pug beagle golden_retriever labrador_retriever german_shepherd "
    "siberian_husky samoyed border_collie boxer french_bulldog yorkshire_terrier rottweiler "
    "doberman great_dane saint_bernard bernese_mountain_dog shih_tzu standard_poodle"
).split()


def parse_args(description: str, extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--datasets", default=str(REPO.parent / "shared" / "datasets"), help="the shared datasets folder")
    p.add_argument("--device", default="auto")
    if extra:
        extra(p)
    return p.parse_args()


def dogs120(datasets: str) -> Path:
    path = (Path(datasets) / "stanford-dogs-120").resolve()
    if not path.is_dir():
        sys.exit(f"error: {path} is missing (pass --datasets)")
    return path


def subset(datasets: str, classes: list[str] | None = None, per_class: int | None = None) -> Path:
    """A temporary folder of symlinks to some classes (photos are never copied)."""
    src = dogs120(datasets)
    root = Path(tempfile.mkdtemp(prefix="breedlab-bench-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    for name in classes or sorted(p.name for p in src.iterdir() if p.is_dir()):
        if per_class is None:
            (root / name).symlink_to(src / name, target_is_directory=True)
        else:
            (root / name).mkdir()
            for f in sorted((src / name).iterdir())[:per_class]:
                (root / name / f.name).symlink_to(f)
    if (src / "breeds.csv").is_file():
        (root / "breeds.csv").symlink_to(src / "breeds.csv")
    return root


def machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": gpu,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "load_average_at_start": [round(x, 2) for x in load] if load else None,
    }


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def eval_features(model: Any, pre: dict[str, Any], paths: list[Path]) -> tuple[Any, float]:
    """The frozen network's pooled features of each photo (the evaluation view, batches of 32) and
    the forward's seconds per photo (decoding not counted). Exits with one line if a photo cannot
    be decoded."""
    import torch

    from training.data import EvalTransform, TransformedImages, decode_images, image_batches

    images, failures = decode_images(paths, resize_size=pre["resize_size"], interpolation=pre["interpolation"])
    if failures:
        sys.exit(f"error: {len(failures)} photo(s) could not be decoded, e.g. {paths[min(failures)]}")
    ds = TransformedImages(images, [0] * len(images), EvalTransform(size=pre["image_size"], mean=pre["mean"], std=pre["std"]))
    start = time.perf_counter()
    with torch.no_grad():  # not inference_mode: callers fit heads on these tensors
        out = torch.cat([model.forward_stages(x) for x, _ in image_batches(ds, batch_size=32)])
    return out, (time.perf_counter() - start) / max(len(paths), 1)


def write_results(name: str, data: dict[str, Any], markdown: str) -> None:
    """Write bench/results/<name>.json and replace the <name> section of bench/RESULTS.md."""
    RESULTS_JSON_DIR.mkdir(exist_ok=True)
    (RESULTS_JSON_DIR / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    begin, end = f"<!-- begin:{name} -->", f"<!-- end:{name} -->"
    section = f"{begin}\n{markdown.strip()}\n{end}"
    text = RESULTS_MD.read_text() if RESULTS_MD.is_file() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    RESULTS_MD.write_text(text)
    print(markdown)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
