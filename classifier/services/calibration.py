"""Calibrate a model's "not a dog" / "not sure" thresholds (the rule is in classifier/calibration.py).

``calibrate_run_dir`` runs the model over its own validation photos (and, for the dog-mass
threshold, over photos of its breeds from the whole dataset: the pretrained head never saw the
fine-tuning, so training photos are fair game and give a steadier quantile), chooses the
thresholds and measures what they do; optional held-out dogs and not-dog photos are measured too.
Called by ``manage.py calibrate_model`` and, for every run that succeeds, by the worker
(``classifier.services.runs``), so each model version serves with thresholds of its own.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.utils import timezone

from classifier.calibration import (
    DEFAULT_TARGET,
    DOG,
    NOT_DOG,
    NOT_SURE,
    Thresholds,
    choose_thresholds,
    rates,
    save_calibration,
    thresholds_dict,
)
from classifier.imaging import ImageRejected, decode_bytes
from classifier.serving import ServingModel, build_serving
from training.data import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)

RULE = "not a dog when dog_mass < dog_mass threshold; else not sure when confidence < confidence threshold"


class CalibrationError(Exception):
    """The model or its photos cannot be calibrated; the message says why."""


def photos_in(folder: Path) -> list[tuple[Path, str]]:
    """(photo, class folder name) under ``folder`` (one level of class folders, or photos directly)."""
    items = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            label = path.parent.name if path.parent != folder else ""
            items.append((path, label))
    return items


def signals(model: ServingModel, items: list[tuple[Path, str]]) -> dict[str, Any]:
    """Per photo: the pretrained head's dog mass, the fine-tuned confidence, and whether it was right."""
    dog_mass, confidence, correct, unreadable = [], [], [], 0
    for start in range(0, len(items), 32):
        labels, images = [], []
        for path, label in items[start : start + 32]:
            try:
                image, _fmt = decode_bytes(path.read_bytes(), name=path.name)
            except (OSError, ImageRejected):
                unreadable += 1
                continue
            labels.append(label)
            images.append(image)
        if not images:
            continue
        out = model.classify(images)
        dog_mass.extend(model.dog_mass(out.base).tolist())
        confidence.extend(out.fine.max(axis=1).tolist())
        correct.extend(model.class_names[int(i)] == label for i, label in zip(out.fine.argmax(axis=1), labels))
    return {
        "dog_mass": np.array(dog_mass),
        "confidence": np.array(confidence),
        "correct": np.array(correct, dtype=bool),
        "unreadable": unreadable,
    }


def measure(photos: dict[str, Any], th: Thresholds) -> dict[str, Any]:
    """What the thresholds do to a set of photos: verdict counts and rates, accuracy when named."""
    verdicts = [th.verdict(dog_mass=d, confidence=c) for d, c in zip(photos["dog_mass"], photos["confidence"])]
    out = rates(verdicts)
    answered = np.array([v == DOG for v in verdicts], dtype=bool)
    if photos["correct"].any():
        out["top1_all"] = float(photos["correct"].mean())
        named = photos["correct"][answered] if answered.any() else np.array([])
        out["top1_when_named"] = float(named.mean()) if named.size else None
    out["false_reject_rate"] = out[f"{NOT_DOG}_rate"]
    out["withheld_rate"] = (out[NOT_DOG] + out[NOT_SURE]) / out["n"] if out["n"] else None
    if photos["unreadable"]:
        out["unreadable"] = photos["unreadable"]
    return out


def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, taken evenly across the (sorted, so class-grouped) list."""
    if not limit or len(items) <= limit:
        return items
    step = math.ceil(len(items) / limit)
    return items[::step]


def calibrate_run_dir(
    run_dir: Path,
    *,
    data_dir: Path | None = None,
    target: float = DEFAULT_TARGET,
    dogs: Path | None = None,
    not_dogs: Path | None = None,
    max_dog_mass_photos: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Choose and measure the thresholds of the model in ``run_dir``; returns the report that
    ``save_calibration`` stores (nothing is written here). Raises CalibrationError."""
    run_dir = Path(run_dir)
    validation_file = run_dir / "validation.json"
    if not validation_file.is_file():
        raise CalibrationError(f"{validation_file} is missing: calibration uses the run's validation photos.")
    if not 0.0 <= target < 0.5:
        raise CalibrationError("The target must be at least 0 and below 0.5.")
    validation = json.loads(validation_file.read_text())
    meta = json.loads((run_dir / "meta.json").read_text())
    config = meta.get("config", {})
    data_dir = Path(data_dir or validation.get("root") or config.get("val_dir") or config["data_dir"])
    if not data_dir.is_dir():
        raise CalibrationError(f"The validation photos' folder {data_dir} does not exist.")

    model = build_serving(
        run_dir,
        cache_dir=Path(settings.BREEDLAB_SERVING_CACHE_DIR),
        engine=settings.BREEDLAB_INFERENCE_ENGINE,
        threads=threads or settings.BREEDLAB_INFERENCE_THREADS,
    )
    if model.base_class_names is None:
        raise CalibrationError("The pretrained weights of this backbone are not available: the dog-class mass cannot be computed.")

    val_items = [(data_dir / p["path"], p["true"]) for p in validation.get("predictions", [])]
    val = signals(model, val_items)
    if not val["dog_mass"].size:
        raise CalibrationError(f"None of the validation photos could be read under {data_dir}.")
    root = Path(config.get("data_dir") or data_dir)
    breeds = set(model.class_names)
    all_dogs = [(p, label) for p, label in photos_in(root) if label in breeds] if root.is_dir() else []
    all_dogs = _spread(all_dogs, max_dog_mass_photos)
    dog_photos = signals(model, all_dogs) if len(all_dogs) > len(val_items) else val
    th = choose_thresholds(dog_photos["dog_mass"], val["confidence"][val["correct"]], target=target)
    report: dict[str, Any] = {
        "thresholds": thresholds_dict(th),
        "target_false_reject": target,
        "rule": RULE,
        "created_at": timezone.now().isoformat(),
        "engine": model.engine,
        "dog_mass_calibration_photos": int(dog_photos["dog_mass"].size),
        "dog_mass_quantiles": {
            q: float(np.quantile(dog_photos["dog_mass"], float(q))) for q in ("0.01", "0.03", "0.05", "0.1", "0.5")
        },
        "validation": {"folder": str(data_dir), **measure(val, th)},
    }
    if dogs:
        report["held_out_dogs"] = {"folder": str(dogs), **measure(signals(model, photos_in(dogs)), th)}
    if not_dogs:
        groups = {}
        subfolders = sorted(p for p in Path(not_dogs).iterdir() if p.is_dir())
        for folder in subfolders or [Path(not_dogs)]:
            groups[folder.name] = measure(signals(model, [(p, "") for p, _ in photos_in(folder)]), th)
        report["not_dogs"] = {"folder": str(not_dogs), **groups}
    return report


def save(report: dict[str, Any], run_dir: Path) -> Path:
    """Store a report beside the model (or in the serving cache when its folder is read-only)."""
    from classifier.inference import model_key

    return save_calibration(report, run_dir, Path(settings.BREEDLAB_SERVING_CACHE_DIR), model_key(run_dir))
