"""Calibrating a model: choose its "not a dog" / "not sure" thresholds on real photos and store them.

``calibrate_run_dir`` measures a run's model on its validation photos (and, when given, held-out
dogs and photos without dogs) and ``calibration_save`` stores the report beside the model; the
worker calls both after every run that succeeds, ``manage.py calibrate_model`` on request.
``builtin_calibrate`` / ``builtin_calibration_save`` do the same for the built-in model, whose
report lives on its ModelVersion row. The rule and the measuring of photos are
serving/calibration.py; this room runs them on a loaded model and writes the results.

Imports serving's calibration, engine, builtin and cache rooms, classifier.models and training/.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from classifier.models import ModelVersion
from classifier.serving import cache as inference
from classifier.serving.builtin import BUILTIN_BACKBONE, BuiltinServingModel
from classifier.serving.cache import model_key
from classifier.serving.calibration import (
    DEFAULT_TARGET,
    RULE,
    CalibrationError,
    Thresholds,
    choose_thresholds,
    measure,
    photos_in,
    save_calibration,
    signals,
    thresholds_dict,
)
from classifier.serving.engine import build_serving


# ---------------------------------------------------------------------------------------------
# Calibrating a model's thresholds (the worker after every run; manage.py calibrate_model)
# ---------------------------------------------------------------------------------------------
def _spread(items: list, limit: int | None) -> list:
    """At most ``limit`` items, taken evenly across the (sorted, so class-grouped) list."""
    if not limit or len(items) <= limit:
        return items
    step = math.ceil(len(items) / limit)
    return items[::step]


def _report_head(th: Thresholds, target: float, model) -> dict[str, Any]:
    """What every calibration report starts with: the thresholds, their target, the rule, when, how."""
    return {"thresholds": thresholds_dict(th), "target_false_reject": target, "rule": RULE,
            "created_at": timezone.now().isoformat(), "engine": model.engine}


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
        int8=settings.BREEDLAB_INT8,  # measured here, as the version is registered, and cached
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
        **_report_head(th, target, model),
        "precision": model.details.get("precision", "fp32"),
        "int8": model.details.get("int8"),
        "dog_mass_calibration_photos": int(dog_photos["dog_mass"].size),
        "dog_mass_quantiles": {
            q: float(np.quantile(dog_photos["dog_mass"], float(q))) for q in ("0.01", "0.03", "0.05", "0.1", "0.5")
        },
        "validation": {"folder": str(data_dir), **measure(val, th)},
    }
    if dogs:
        report["held_out_dogs"] = {"folder": str(dogs), **measure(signals(model, photos_in(dogs)), th)}
    if not_dogs:
        report["not_dogs"] = _measure_not_dogs(model, not_dogs, th)
    return report


def calibration_save(*, report: dict[str, Any], run_dir: Path) -> Path:
    """Store a report beside the model (or in the serving cache when its folder is read-only)."""
    return save_calibration(report, run_dir, Path(settings.BREEDLAB_SERVING_CACHE_DIR), model_key(run_dir))


# ---------------------------------------------------------------------------------------------
# The built-in model (serving/builtin.py): its accuracy and thresholds, measured on real photos
# ---------------------------------------------------------------------------------------------
def builtin_calibrate(
    *, dogs: Path, not_dogs: Path | None = None, target: float = DEFAULT_TARGET, threads: int | None = None
) -> dict[str, Any]:
    """Measure the built-in model on labelled dog photos (``dogs``: <breed>/<photo>, breeds matched to
    ImageNet by a breeds.csv folder,wnid or by name) and choose its thresholds from the photos of
    breeds it knows: the ``target`` quantile of their dog mass and of the confidence of its right
    answers (photos of other breeds, e.g. dingo, are measured, not used). ``not_dogs`` (subfolders such as cats/, other/) measures false accepts. Nothing is
    written here (``builtin_calibration_save`` stores the report). Raises CalibrationError."""
    from training.backbones import get_backbone, match_original_classes

    if not 0.0 <= target < 0.5:
        raise CalibrationError("The target must be at least 0 and below 0.5.")
    dogs = Path(dogs)
    if not dogs.is_dir():
        raise CalibrationError(f"The dog photos' folder {dogs} does not exist.")
    if threads:
        import torch

        torch.set_num_threads(threads)
    model = BuiltinServingModel.from_base(inference.get_base(BUILTIN_BACKBONE))
    name_of = dict(zip(model.breed_indices, model.class_names))  # ImageNet index -> breed name
    items = photos_in(dogs)
    folders = sorted({label for _p, label in items if label})
    matches = match_original_classes(get_backbone(BUILTIN_BACKBONE), folders, dogs)
    to_breed = {folders[i]: name_of[j] for i, j in matches.items() if j in name_of}
    known = [(p, to_breed[label]) for p, label in items if label in to_breed]
    other = [(p, "") for p, label in items if label not in to_breed]
    if not known:
        raise CalibrationError(f"No photo under {dogs} is in a folder of one of the 118 ImageNet dog breeds.")
    known_signals = signals(model, known)
    other_signals = signals(model, other) if other else None
    th = choose_thresholds(known_signals["dog_mass"], known_signals["confidence"][known_signals["correct"]], target=target)
    th = Thresholds(th.dog_mass, th.confidence, "calibrate_model --builtin")
    report: dict[str, Any] = {
        **_report_head(th, target, model),
        "dogs": {
            "folder": str(dogs),
            "breeds_known": len(to_breed),
            "breeds_unknown": sorted(set(folders) - set(to_breed)),
            **measure(known_signals, th),
        },
    }
    if other_signals is not None:
        report["dogs_of_other_breeds"] = measure(other_signals, th)
    if not_dogs:
        report["not_dogs"] = _measure_not_dogs(model, not_dogs, th)
    return report


def builtin_calibration_save(*, report: dict[str, Any]) -> ModelVersion:
    """Store the report on the built-in version: its thresholds and its measured accuracy.

    Web processes that already serve it use the new thresholds from their next restart."""
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().get(kind=ModelVersion.Kind.BUILTIN)
        version.metrics = {**version.metrics, "calibration": report, "val_acc": report["dogs"].get("top1_all")}
        version.save(update_fields=["metrics"])
    inference.reset_current()
    return version


def _measure_not_dogs(model, not_dogs, th) -> dict:
    """The rule's rates on photos without dogs, per sub-folder (or the folder itself)."""
    groups = {}
    subfolders = sorted(p for p in Path(not_dogs).iterdir() if p.is_dir())
    for folder in subfolders or [Path(not_dogs)]:
        groups[folder.name] = measure(signals(model, [(p, "") for p, _ in photos_in(folder)]), th)
    return {"folder": str(not_dogs), **groups}
