"""The "not a dog" / "not sure" rule and its thresholds, stored with each model version.

Two signals per photo:

- ``dog_mass``: the probability the pretrained head (ImageNet) puts on its 118 dog classes
  (WordNet n02085620..n02113978), summed; for a CIFAR-10 backbone its "dog" class;
- ``confidence``: the fine-tuned model's top-1 probability.

Rule: ``dog_mass < dog_threshold`` -> not a dog; else ``confidence < confidence_threshold`` ->
not sure; else the breed. Thresholds are calibrated on the model's validation photos (dogs of
its own breeds): ``dog_threshold`` is the ``target`` quantile of their dog mass (at most that
fraction of dog photos is called "not a dog"), ``confidence_threshold`` the ``target``
quantile of the confidence of the correctly answered ones (at most that fraction of right
answers is withheld as "not sure"). The worker calibrates every run that succeeds and
``manage.py calibrate_model`` recalibrates (``calibrate_run_dir`` in serving/calibrate.py); they store
``calibration.json`` in the model's folder (or in the serving cache when that folder is
read-only), the command also with false-accept/false-reject rates measured on held-out photos.

This room holds the rule, the thresholds and the measuring of photos (``signals``, ``measure``);
it imports serving.imaging and training.data, never the model cache or Django models.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from classifier.serving.imaging import ImageRejected, decode_bytes
from training.data import IMAGE_EXTENSIONS
from training.files import atomic_write_bytes

if TYPE_CHECKING:
    from classifier.serving.engine import ServingModel

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
DEFAULT_TARGET = 0.03
NOT_DOG, NOT_SURE, DOG = "not_dog", "not_sure", "dog"


@dataclass(frozen=True)
class Thresholds:
    dog_mass: float
    confidence: float
    source: str  # "calibration.json" | "default"

    def verdict(self, *, dog_mass: float | None, confidence: float | None) -> str:
        """"dog", "not_dog" or "not_sure" (a missing signal never rejects on its own)."""
        if dog_mass is not None and dog_mass < self.dog_mass:
            return NOT_DOG
        if confidence is not None and confidence < self.confidence:
            return NOT_SURE
        return DOG


# Used until a model version is calibrated: the thresholds calibrate_model chose (target 3%)
# for an EfficientNet-Lite0 model on dogs-20 (bench/RESULTS-serving.md: 0.515 and 0.409), rounded
# down. Without a fine-tuned model only the pretrained head answers: the dog-mass rule alone.
DEFAULT_THRESHOLDS = Thresholds(dog_mass=0.5, confidence=0.4, source="default")


def choose_thresholds(dog_masses: np.ndarray, confidences_correct: np.ndarray, *, target: float = DEFAULT_TARGET) -> Thresholds:
    """Quantile thresholds so that at most ``target`` of the calibration photos is rejected by each test."""
    if not 0.0 <= target < 0.5:
        raise ValueError(f"target must be in [0, 0.5), got {target}.")
    if len(dog_masses) == 0:
        raise ValueError("Calibration needs at least one dog photo.")
    dog = float(np.quantile(np.asarray(dog_masses, dtype=np.float64), target, method="lower"))
    conf = float(np.quantile(np.asarray(confidences_correct, dtype=np.float64), target, method="lower")) if len(confidences_correct) else 0.0
    # The quantile photo itself must pass (the rule is "< threshold").
    return Thresholds(dog_mass=dog, confidence=conf, source=CALIBRATION_FILE)


def rates(verdicts: list[str]) -> dict[str, Any]:
    n = len(verdicts)
    counts = {k: verdicts.count(k) for k in (DOG, NOT_SURE, NOT_DOG)}
    return {"n": n, **{k: counts[k] for k in counts}, **{f"{k}_rate": (counts[k] / n if n else None) for k in counts}}


def calibration_paths(run_dir: Path, cache_dir: Path, model_key: str) -> list[Path]:
    """Where a calibration may live: the model's folder first, then the serving cache."""
    return [Path(run_dir) / CALIBRATION_FILE, Path(cache_dir) / "calibration" / f"{model_key}.json"]


def load_thresholds(run_dir: Path, cache_dir: Path, model_key: str) -> tuple[Thresholds, dict[str, Any] | None]:
    for path in calibration_paths(run_dir, cache_dir, model_key):
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                th = data["thresholds"]
                return Thresholds(float(th["dog_mass"]), float(th["confidence"]), CALIBRATION_FILE), data
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("ignoring unreadable calibration %s: %s", path, exc)
    return DEFAULT_THRESHOLDS, None


def save_calibration(data: dict[str, Any], run_dir: Path, cache_dir: Path, model_key: str) -> Path:
    """Write atomically into the model's folder, or the serving cache when that is not writable."""
    payload = json.dumps(data, indent=2, sort_keys=True).encode()
    errors = []
    for path in calibration_paths(run_dir, cache_dir, model_key):
        try:
            atomic_write_bytes(path, payload)
            return path
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    raise OSError("Cannot write the calibration anywhere: " + "; ".join(errors))


def thresholds_dict(th: Thresholds) -> dict[str, Any]:
    d = asdict(th)
    d.pop("source")
    return d


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
