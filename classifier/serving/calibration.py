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
``manage.py calibrate_model`` recalibrates (classifier/services/calibration.py); they store
``calibration.json`` in the model's folder (or in the serving cache when that folder is
read-only), the command also with false-accept/false-reject rates measured on held-out photos.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".calibration.", suffix=".tmp", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
            return path
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
    raise OSError("Cannot write the calibration anywhere: " + "; ".join(errors))


def thresholds_dict(th: Thresholds) -> dict[str, Any]:
    d = asdict(th)
    d.pop("source")
    return d
