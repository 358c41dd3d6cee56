"""Check an ImageFolder dataset on disk and describe it, before anyone trains on it.

Pure Python + Pillow (no Django). ``build_report(root)`` opens every file under the class folders
with Pillow under the decompression-bomb limit and returns a JSON-serialisable dict:

    {
      "root": str,
      "settings": {"min_side": int, "min_images_per_class": int, "max_pixels": int | None},
      "classes": [{"name": str, "images": int, "skipped": int}, ...],       # sorted by name
      "total_images": int,                  # usable images over all classes
      "total_files": int,                   # usable + skipped entries
      "imbalance_ratio": float | None,      # largest / smallest non-empty class
      "skipped": [{"path": str, "reason": str, "detail": str}, ...],       # reason: see SKIP_REASONS
      "duplicates": [{"sha256": str, "paths": [str, ...], "cross_class": bool}, ...],
      "sizes": {"width": {"min", "median", "max"} | None, "height": ... | None,
                "shorter_side_histogram": [{"bucket": str, "min": int, "max": int | None, "count": int}]},
      "problems": [str, ...],               # blocking: training must not start (English sentences)
      "warnings": [str, ...],               # worth showing, not blocking (English sentences)
      "problem_items": [{"code": str, ...}, ...],   # the same, as codes and numbers: pages
      "warning_items": [{"code": str, ...}, ...],   # say them in the reader's language (see NOTES)
      "usable_files": {class: [relpath, ...]},
    }

Paths are relative to ``root`` with forward slashes. ``classifier.datasets.importing.split_files``
turns the usable files into the seeded train/val/test split (training.splits, the one splitter).

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import hashlib
import os
import statistics
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

__all__ = ["NOTES", "SKIP_REASONS", "build_report", "note_text"]

SKIP_REASONS = {
    "hidden": "hidden or system file",
    "outside_class": "not inside a class folder",
    "not_image": "not an image, or a format Pillow cannot read",
    "corrupt": "damaged image",
    "tiny": "image too small",
    "too_many_pixels": "image has too many pixels (possible decompression bomb)",
    "unreadable": "file cannot be read",
}
JUNK_NAMES = frozenset({"__macosx", "thumbs.db", "ehthumbs.db", "desktop.ini"})
# Lower edges of the shorter-side histogram buckets; the last bucket is open-ended.
SIZE_BUCKETS = (0, 128, 256, 512, 1024, 2048)
IMBALANCE_WARNING_RATIO = 5.0


def _s(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


# Problems and warnings as codes with their numbers; the English sentence of each (the CLI, the API
# and reports stored before the codes existed); classifier.datasets.report_text translates them.
NOTES = {
    "few_classes": lambda i: f"Found {i['found']} class {_s(i['found'], 'folder', 'folders')} with usable photos; "
    "at least two are needed.",
    "empty_class": lambda i: f"The class folder '{i['name']}' is empty.",
    "few_photos": lambda i: f"The class '{i['name']}' has {i['photos']} usable {_s(i['photos'], 'photo', 'photos')}; "
    f"at least {i['needed']} are needed.",
    "imbalanced": lambda i: f"The classes are heavily imbalanced: '{i['largest']}' has {i['largest_photos']} photos, "
    f"{i['ratio']:g} times as many as '{i['smallest']}' ({i['smallest_photos']}).",
    "duplicates": lambda i: f"Found {i['groups']} {_s(i['groups'], 'group', 'groups')} of identical files "
    f"({i['extra']} extra {_s(i['extra'], 'copy', 'copies')}, {i['cross']} {_s(i['cross'], 'group', 'groups')} "
    "spanning different classes).",
    "skipped": lambda i: f"{i['files']} {_s(i['files'], 'file was', 'files were')} skipped; "
    "see the list of skipped files for reasons.",
}


def note_text(item: dict) -> str:
    """The English sentence of a problem or warning item."""
    return NOTES[item["code"]](item)


def build_report(
    root: Path,
    *,
    min_side: int = 64,
    min_images_per_class: int = 5,
    max_pixels: int | None = None,
) -> dict:
    """Describe the ImageFolder dataset at ``root`` (one sub-folder per class).

    ``max_pixels`` defaults to Pillow's ``Image.MAX_IMAGE_PIXELS`` at call time; images above it
    (or above Pillow's own limit) are skipped as possible decompression bombs.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    if max_pixels is None:
        max_pixels = Image.MAX_IMAGE_PIXELS

    skipped: list[dict] = []
    usable: dict[str, list[str]] = {}
    skipped_per_class: dict[str, int] = defaultdict(int)
    files_per_class: dict[str, int] = defaultdict(int)
    by_hash: dict[str, list[str]] = defaultdict(list)
    sizes: list[tuple[int, int]] = []

    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        rel = entry.name
        if _is_junk(entry.name):
            skipped.append(_skip(rel, "hidden"))
            continue
        if not entry.is_dir():  # follows symlinks
            skipped.append(_skip(rel, "outside_class"))
            continue
        class_name = entry.name
        usable[class_name] = []
        for path, rel in _walk_files(Path(entry.path), class_name):
            if any(_is_junk(part) for part in rel.split("/")[1:]):
                skipped.append(_skip(rel, "hidden"))
                skipped_per_class[class_name] += 1
                continue
            files_per_class[class_name] += 1
            outcome = _check_image(path, min_side=min_side, max_pixels=max_pixels)
            if isinstance(outcome, dict):
                outcome["path"] = rel
                skipped.append(outcome)
                skipped_per_class[class_name] += 1
                continue
            size, digest = outcome
            usable[class_name].append(rel)
            sizes.append(size)
            by_hash[digest].append(rel)

    classes = [
        {"name": name, "images": len(files), "skipped": skipped_per_class[name]}
        for name, files in sorted(usable.items())
    ]
    counts = {name: len(files) for name, files in usable.items()}
    nonzero = [count for count in counts.values() if count]
    imbalance = round(max(nonzero) / min(nonzero), 3) if nonzero else None
    duplicates = [
        {"sha256": digest, "paths": sorted(paths), "cross_class": len({p.split("/", 1)[0] for p in paths}) > 1}
        for digest, paths in sorted(by_hash.items(), key=lambda item: sorted(item[1])[0])
        if len(paths) > 1
    ]

    problem_items = _problems(counts, files_per_class, min_images_per_class)
    warning_items = _warnings(counts, imbalance, duplicates, skipped)
    return {
        "root": str(root),
        "settings": {"min_side": min_side, "min_images_per_class": min_images_per_class, "max_pixels": max_pixels},
        "classes": classes,
        "total_images": sum(counts.values()),
        "total_files": sum(counts.values()) + len(skipped),
        "imbalance_ratio": imbalance,
        "skipped": skipped,
        "duplicates": duplicates,
        "sizes": _size_summary(sizes),
        "problems": [note_text(item) for item in problem_items],
        "warnings": [note_text(item) for item in warning_items],
        "problem_items": problem_items,
        "warning_items": warning_items,
        "usable_files": {name: sorted(files) for name, files in sorted(usable.items())},
    }


# Helpers ------------------------------------------------------------------------------------


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES


def _skip(rel: str, reason: str, detail: str = "") -> dict:
    return {"path": rel, "reason": reason, "detail": detail or SKIP_REASONS[reason]}


def _walk_files(folder: Path, prefix: str) -> Iterator[tuple[Path, str]]:
    """Files under ``folder`` (recursively, sorted, following symlinks without looping) as
    (path, relpath-from-root). Hidden sub-folders are yielded as their own relpath so the caller
    can report them instead of descending into them."""
    seen: set[tuple[int, int]] = set()

    def walk(current: Path, rel: str) -> Iterator[tuple[Path, str]]:
        info = current.stat()
        key = (info.st_dev, info.st_ino)
        if key in seen:
            return
        seen.add(key)
        for entry in sorted(os.scandir(current), key=lambda e: e.name):
            child_rel = f"{rel}/{entry.name}"
            if entry.is_dir():
                if _is_junk(entry.name):
                    yield Path(entry.path), child_rel
                else:
                    yield from walk(Path(entry.path), child_rel)
            else:
                yield Path(entry.path), child_rel

    yield from walk(folder, prefix)


def _check_image(path: Path, *, min_side: int, max_pixels: int | None) -> dict | tuple[tuple[int, int], str]:
    """Return ((width, height), sha256) for a usable image, or a skip dict (without "path")."""
    try:
        with open(path, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return _skip("", "unreadable", f"file cannot be read: {exc.strerror or exc}")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # 1. Parse the header and check the declared size before decoding anything.
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    return _skip(
                        "", "too_many_pixels", f"{width}x{height} pixels is more than the limit of {max_pixels:,}"
                    )
                image.verify()
            # 2. verify() leaves the image unusable: reopen and decode it (JPEGs at reduced scale).
            with Image.open(path) as image:
                image.draft(image.mode, (max(1, min_side), max(1, min_side)))
                image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _skip("", "too_many_pixels", str(exc))
    except UnidentifiedImageError:
        return _skip("", "not_image")
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        return _skip("", "corrupt", f"damaged image: {exc}")

    if min(width, height) < min_side:
        return _skip("", "tiny", f"{width}x{height}: the shorter side is under {min_side} px")
    return (width, height), digest


def _size_summary(sizes: list[tuple[int, int]]) -> dict:
    def stats(values: list[int]) -> dict | None:
        if not values:
            return None
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    shorter = [min(size) for size in sizes]
    histogram = []
    for index, low in enumerate(SIZE_BUCKETS):
        high = SIZE_BUCKETS[index + 1] - 1 if index + 1 < len(SIZE_BUCKETS) else None
        label = f"{low}-{high}" if high is not None else f">={low}"
        count = sum(1 for side in shorter if side >= low and (high is None or side <= high))
        histogram.append({"bucket": label, "min": low, "max": high, "count": count})
    return {
        "width": stats([w for w, _ in sizes]),
        "height": stats([h for _, h in sizes]),
        "shorter_side_histogram": histogram,
    }


def _problems(counts: dict[str, int], files_per_class: dict[str, int], min_images: int) -> list[dict]:
    problems: list[dict] = []
    usable_classes = [name for name, count in counts.items() if count]
    if len(usable_classes) < 2:
        problems.append({"code": "few_classes", "found": len(usable_classes)})
    for name in sorted(counts):
        if files_per_class.get(name, 0) == 0:
            problems.append({"code": "empty_class", "name": name})
        elif counts[name] < min_images:
            problems.append({"code": "few_photos", "name": name, "photos": counts[name], "needed": min_images})
    return problems


def _warnings(
    counts: dict[str, int], imbalance: float | None, duplicates: list[dict], skipped: list[dict]
) -> list[dict]:
    notes: list[dict] = []
    nonzero = {name: count for name, count in counts.items() if count}
    if imbalance is not None and imbalance > IMBALANCE_WARNING_RATIO:
        largest = max(sorted(nonzero), key=nonzero.__getitem__)
        smallest = min(sorted(nonzero), key=nonzero.__getitem__)
        notes.append({"code": "imbalanced", "largest": largest, "largest_photos": nonzero[largest], "ratio": imbalance,
                      "smallest": smallest, "smallest_photos": nonzero[smallest]})
    if duplicates:
        notes.append({"code": "duplicates", "groups": len(duplicates),
                      "extra": sum(len(group["paths"]) - 1 for group in duplicates),
                      "cross": sum(1 for group in duplicates if group["cross_class"])})
    if skipped:
        notes.append({"code": "skipped", "files": len(skipped)})
    return notes
