"""The one splitter: train / validation / test, seeded, stratified and duplicate-aware.

Both worlds use it: the CLI splits a folder with it, and the web app stores its result with
each dataset version (``classifier.datasets``) and hands it to training as a split file.

- Validation chooses (epochs, the head's regularisation, not-a-dog thresholds, promotion);
  test is looked at once, after every choice was made, and is what results report.
- Duplicate-aware: photos with the same bytes (SHA-256) or the same perceptual hash (a 64-bit
  difference hash, which survives re-encoding and resizing) form one group, and a group is never
  split across two parts. Oxford flowers, for one, holds dozens of re-saved copies.
- Stratified and stable: each class is shuffled with its own seeded generator
  (``random.Random(f"{seed}:{class}")``), so adding a class does not move another's photos.

Imports nothing of classifier/ or Django.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from training.data import Sample, check_classes, scan_image_folder
from training.errors import DataError

if TYPE_CHECKING:
    from training.config import TrainConfig

PARTS = ("train", "val", "test")
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15
FLAT_HASHES = frozenset({"0" * 16, "f" * 16})


# ---------------------------------------------------------------------------------------------
# Fingerprints: which photos are the same photo
# ---------------------------------------------------------------------------------------------
def difference_hash(image: Image.Image) -> str:
    """A 64-bit difference hash (dHash) as 16 hex digits: equal for re-encoded or resized copies."""
    gray = image.convert("L")
    if hasattr(gray, "reduce") and min(gray.size) > 64:
        gray = gray.reduce(max(1, min(gray.size) // 64))
    small = gray.resize((9, 8), Image.Resampling.LANCZOS)
    px = list(small.tobytes())
    bits = 0
    for row in range(8):
        for col in range(8):
            bits = (bits << 1) | int(px[row * 9 + col + 1] > px[row * 9 + col])
    return f"{bits:016x}"


def file_fingerprint(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """(SHA-256 of the bytes, dHash of the picture or None when it does not decode)."""
    path = Path(path)
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    try:
        with Image.open(path) as img:
            img.draft("L", (64, 64))  # JPEG: decode at 1/8 scale, enough for a 9x8 hash
            dhash = difference_hash(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return digest, None
    # A flat picture has no gradients: its hash says nothing about which photo it is.
    return digest, (None if dhash in FLAT_HASHES else dhash)


def duplicate_groups(fingerprints: Mapping[str, Iterable[str | None]]) -> dict[str, str]:
    """``{relpath: group}``: files sharing any fingerprint value are in one group (union-find).

    ``fingerprints`` maps each file to its fingerprint values (e.g. SHA-256 and dHash); None
    values are ignored. The group id is the group's first relpath in sorted order.
    """
    parent: dict[str, str] = {rel: rel for rel in fingerprints}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner: dict[str, str] = {}
    for rel in sorted(fingerprints):
        for value in fingerprints[rel]:
            if value is None:
                continue
            if value in owner:
                a, b = find(owner[value]), find(rel)
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                owner[value] = rel
    return {rel: find(rel) for rel in fingerprints}


# ---------------------------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------------------------
def _quotas(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of ``n`` photos: >= 1 in each asked-for part while train keeps >= 1."""
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if test_fraction > 0 and n >= 3:
        n_test = max(n_test, 1)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)
    while n_val + n_test > n - 1 and (n_val or n_test):
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def split_files(
    files_by_class: Mapping[str, Sequence[str]],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
    inherit: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Split every class's files into train / val / test.

    1. Files that ``inherit`` (an earlier version's split) already places keep their part.
    2. Each class's remaining files are grouped by ``groups`` (duplicates: one group never
       straddles two parts, across classes too), the groups shuffled with the class's own seeded
       generator, then dealt to test, then val, until each part holds its share of the class
       (``round(n * fraction)``, at least one photo when the class has enough); the rest train.
    Returns ``{"train": [...], "val": [...], "test": [...]}``, each sorted, forward slashes.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got {val_fraction} and {test_fraction}."
        )
    groups = dict(groups or {})
    placed: dict[str, str] = {}  # relpath -> part
    for part in PARTS:
        for rel in (inherit or {}).get(part, []) or []:
            placed[str(rel)] = part
    group_part: dict[str, str] = {}
    for rel, part in placed.items():
        group_part.setdefault(groups.get(rel, rel), part)

    out: dict[str, list[str]] = {part: [] for part in PARTS}
    for class_name in sorted(files_by_class):
        files = sorted(str(rel).replace("\\", "/") for rel in files_by_class[class_name])
        n_val, n_test = _quotas(len(files), val_fraction, test_fraction)
        want = {"test": n_test, "val": n_val}
        have = {part: 0 for part in PARTS}
        members: dict[str, list[str]] = {}
        for rel in files:
            members.setdefault(groups.get(rel, rel), []).append(rel)
        free: list[str] = []
        for group, rels in members.items():
            known = next((placed[r] for r in rels if r in placed), None) or group_part.get(group)
            if known is None:
                free.append(group)
                continue
            for rel in rels:
                out[placed.get(rel, known)].append(rel)
                have[placed.get(rel, known)] += 1
        random.Random(f"{seed}:{class_name}").shuffle(free)
        for group in free:
            size = len(members[group])
            part = next((p for p in ("test", "val") if have[p] < want[p] and have[p] + size <= max(want[p], 1)), "train")
            group_part[group] = part
            out[part].extend(members[group])
            have[part] += size
        if have["train"] == 0 and files:
            # Every photo landed in val/test (large duplicate groups): move the smallest group back.
            for part in ("val", "test"):
                mine = [g for g in members if group_part.get(g) == part and all(r not in placed for r in members[g])]
                if mine:
                    g = min(mine, key=lambda g: len(members[g]))
                    for rel in members[g]:
                        out[part].remove(rel)
                    out["train"].extend(members[g])
                    group_part[g] = "train"
                    break
    return {part: sorted(rels) for part, rels in out.items()}


def split_folder_files(
    files_by_class: Mapping[str, Sequence[str]],
    root: str | os.PathLike[str],
    *,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = 0,
) -> dict[str, list[str]]:
    """``split_files`` with duplicate groups computed from the files under ``root``."""
    root = Path(root)
    prints = {rel: file_fingerprint(root / rel) for files in files_by_class.values() for rel in files}
    return split_files(
        files_by_class,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        groups=duplicate_groups(prints),
    )


# ---------------------------------------------------------------------------------------------
# Split files
# ---------------------------------------------------------------------------------------------
def read_split_file(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read ``{"train": [relpaths], "val": [relpaths], "test": [relpaths]}`` ("test" optional)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"Split file {path} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"Split file {path} is not valid JSON ({exc}).") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("train", "val")):
        raise DataError(f'Split file {path} must be a JSON object {{"train": [...], "val": [...], "test": [...]}}.')
    if "test" in data and not isinstance(data["test"], list):
        raise DataError(f'Split file {path}: "test" must be a list of paths.')
    return {part: [str(p) for p in data.get(part, [])] for part in PARTS}


# ---------------------------------------------------------------------------------------------
# A run's three parts, as samples
# ---------------------------------------------------------------------------------------------
@dataclass
class DataSplits:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    val_root: Path
    skipped: list[tuple[str, str]]


def _remap(folder: Path, classes: list[str], what: str) -> tuple[list[Sample], list[tuple[str, str]]]:
    extra_classes, samples, skipped = scan_image_folder(folder)
    unknown = sorted(set(extra_classes) - set(classes))
    if unknown:
        raise DataError(f"The {what} folder has classes the training folder lacks: {', '.join(unknown)}.")
    remap = {i: classes.index(c) for i, c in enumerate(extra_classes)}
    out = [Sample(s.path, s.relpath, remap[s.label]) for s in samples]
    if not out:
        raise DataError(f"The {what} folder {folder} holds no images.")
    return out, [(f"{folder.name}/{rel}", why) for rel, why in skipped]


def load_splits(config: TrainConfig) -> DataSplits:
    """Scan the folders and split them: a split file, separate folders, or the seeded splitter."""
    root = Path(config.data_dir)
    classes, samples, skipped = scan_image_folder(root)
    check_classes(classes, samples, root=root)
    if config.val_dir:
        val_root = Path(config.val_dir)
        val, val_skipped = _remap(val_root, classes, "validation")
        test: list[Sample] = []
        if config.test_dir:
            test, test_skipped = _remap(Path(config.test_dir), classes, "test")
            val_skipped += test_skipped
        return DataSplits(classes, samples, val, test, val_root, skipped + val_skipped)
    if config.split_file:
        parts = read_split_file(config.split_file)
        by_rel = {s.relpath: s for s in samples}
        skipped_rel = {rel for rel, _ in skipped}
        listed = [r for part in PARTS for r in parts[part]]
        missing = [r for r in listed if r not in by_rel and r not in skipped_rel]
        if missing:
            raise DataError(
                f"The split file names {len(missing)} image(s) that are not in {root}, e.g. {', '.join(missing[:3])}."
            )
        seen: set[str] = set()
        for part in PARTS:
            overlap = seen & set(parts[part])
            if overlap:
                raise DataError(f"The split file lists {len(overlap)} image(s) in two parts, e.g. {sorted(overlap)[0]}.")
            seen |= set(parts[part])
        chosen = {part: [by_rel[r] for r in parts[part] if r in by_rel] for part in PARTS}
        if not chosen["val"]:
            raise DataError("The split file's val list is empty.")
        return DataSplits(classes, chosen["train"], chosen["val"], chosen["test"], root, skipped)
    files_by_class: dict[str, list[str]] = {}
    for s in samples:
        files_by_class.setdefault(classes[s.label], []).append(s.relpath)
    parts = split_folder_files(
        files_by_class, root, val_fraction=config.val_fraction, test_fraction=config.test_fraction, seed=config.seed
    )
    by_rel = {s.relpath: s for s in samples}
    return DataSplits(classes, *[[by_rel[r] for r in parts[p]] for p in PARTS], root, skipped)
