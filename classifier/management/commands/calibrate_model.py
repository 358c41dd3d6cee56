"""manage.py calibrate_model: choose the not-a-dog / not-sure thresholds of a model and measure them.

    manage.py calibrate_model 7                      # model version 7 (its folder under RUNS_ROOT)
    manage.py calibrate_model --run-dir var/runs/x   # any run folder
        [--data-dir DIR]    where validation.json's photos are (default: the run's own data folder)
        [--dogs DIR]        held-out dog photos of the model's breeds (<breed>/<photo>): false rejects
        [--not-dogs DIR]    photos without dogs (e.g. ../shared/datasets/not-dogs): false accepts
        [--target 0.03]     at most this share of validation dogs rejected by each test
        [--dry-run]         print, do not write calibration.json

Thresholds come from the validation photos only (see classifier/calibration.py); the rates on
--dogs/--not-dogs are measured with those thresholds and stored beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from classifier.calibration import DOG, NOT_DOG, NOT_SURE, choose_thresholds, rates, save_calibration, thresholds_dict
from classifier.imaging import ImageRejected, decode_bytes
from classifier.inference import model_key, run_dir_for
from classifier.models import ModelVersion
from classifier.serving import build_serving

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def _photos(folder: Path) -> list[tuple[Path, str]]:
    """(photo, class folder name) under ``folder`` (one level of class folders, or photos directly)."""
    items = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
            label = path.parent.name if path.parent != folder else ""
            items.append((path, label))
    return items


class Command(BaseCommand):
    help = "Calibrate the not-a-dog / not-sure thresholds of a model version and measure false accepts/rejects."

    def add_arguments(self, parser):
        parser.add_argument("version", nargs="?", type=int, help="ModelVersion id")
        parser.add_argument("--run-dir", type=Path)
        parser.add_argument("--data-dir", type=Path)
        parser.add_argument("--dogs", type=Path)
        parser.add_argument("--not-dogs", type=Path)
        parser.add_argument("--target", type=float, default=0.03)
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, **opts):
        run_dir = self._run_dir(opts)
        validation_file = run_dir / "validation.json"
        if not validation_file.is_file():
            raise CommandError(f"{validation_file} is missing: calibration uses the run's validation photos.")
        validation = json.loads(validation_file.read_text())
        meta = json.loads((run_dir / "meta.json").read_text())
        data_dir = opts["data_dir"] or Path(validation.get("root") or meta.get("config", {}).get("val_dir") or meta["config"]["data_dir"])
        if not data_dir.is_dir():
            raise CommandError(f"The validation photos' folder {data_dir} does not exist; pass --data-dir.")
        if not 0.0 <= opts["target"] < 0.5:
            raise CommandError("--target must be at least 0 and below 0.5.")
        for name in ("dogs", "not_dogs"):
            if opts[name] is not None and not opts[name].is_dir():
                raise CommandError(f"--{name.replace('_', '-')} {opts[name]} is not a folder.")

        model = build_serving(
            run_dir, cache_dir=Path(settings.BREEDLAB_SERVING_CACHE_DIR), engine=settings.BREEDLAB_INFERENCE_ENGINE,
            threads=settings.BREEDLAB_INFERENCE_THREADS,
        )
        if model.base_class_names is None:
            raise CommandError("The pretrained weights of this backbone are not available: the dog-class mass cannot be computed.")

        val_items = [(data_dir / p["path"], p["true"]) for p in validation.get("predictions", [])]
        val = self._signals(model, val_items)
        if not val["dog_mass"].size:
            raise CommandError(f"None of the validation photos could be read under {data_dir}.")
        # The dog mass comes from the pretrained head alone, which fine-tuning never changed:
        # every photo of the run's breeds calibrates it (training photos included), which gives
        # a steadier quantile than the validation photos alone.
        root = Path(meta.get("config", {}).get("data_dir") or data_dir)
        all_dogs = [(p, label) for p, label in _photos(root) if label in model.class_names] if root.is_dir() else []
        dogs = self._signals(model, all_dogs) if len(all_dogs) > len(val_items) else val
        correct = val["confidence"][val["correct"]]
        th = choose_thresholds(dogs["dog_mass"], correct, target=opts["target"])
        report = {
            "thresholds": thresholds_dict(th),
            "target_false_reject": opts["target"],
            "rule": "not a dog when dog_mass < dog_mass threshold; else not sure when confidence < confidence threshold",
            "created_at": timezone.now().isoformat(),
            "engine": model.engine,
            "dog_mass_calibration_photos": int(dogs["dog_mass"].size),
            "dog_mass_quantiles": {q: float(np.quantile(dogs["dog_mass"], float(q))) for q in ("0.01", "0.03", "0.05", "0.1", "0.5")},
            "validation": {"folder": str(data_dir), **self._rates(model, val, th)},
        }
        if opts["dogs"]:
            report["held_out_dogs"] = {"folder": str(opts["dogs"]), **self._rates(model, self._signals(model, _photos(opts["dogs"])), th)}
        if opts["not_dogs"]:
            groups = {}
            subfolders = sorted(p for p in opts["not_dogs"].iterdir() if p.is_dir())
            for folder in subfolders or [opts["not_dogs"]]:
                groups[folder.name] = self._rates(model, self._signals(model, [(p, "") for p, _ in _photos(folder)]), th)
            report["not_dogs"] = {"folder": str(opts["not_dogs"]), **groups}
        self.stdout.write(json.dumps(report, indent=2))
        if not opts["dry_run"]:
            path = save_calibration(report, run_dir, Path(settings.BREEDLAB_SERVING_CACHE_DIR), model_key(run_dir))
            self.stdout.write(self.style.SUCCESS(f"Wrote {path}"))

    def _run_dir(self, opts) -> Path:
        if opts["run_dir"] is not None:
            if opts["version"] is not None:
                raise CommandError("Give a model version id or --run-dir, not both.")
            folder = opts["run_dir"]
        elif opts["version"] is not None:
            version = ModelVersion.objects.filter(pk=opts["version"]).first()
            if version is None:
                raise CommandError(f"There is no model version {opts['version']}.")
            folder = run_dir_for(version.path)
        else:
            raise CommandError("Give a model version id or --run-dir.")
        if not (folder / "model.safetensors").is_file():
            raise CommandError(f"{folder} holds no model.safetensors.")
        return folder

    def _signals(self, model, items: list[tuple[Path, str]]) -> dict[str, np.ndarray]:
        dog_mass, confidence, correct, unreadable = [], [], [], 0
        for start in range(0, len(items), 32):
            chunk, images = [], []
            for path, label in items[start : start + 32]:
                try:
                    image, _fmt = decode_bytes(path.read_bytes(), name=path.name)
                except (OSError, ImageRejected):
                    unreadable += 1
                    continue
                chunk.append(label)
                images.append(image)
            if not images:
                continue
            out = model.classify(images)
            dog_mass.extend(model.dog_mass(out.base).tolist())
            confidence.extend(out.fine.max(axis=1).tolist())
            correct.extend(model.class_names[int(i)] == label for i, label in zip(out.fine.argmax(axis=1), chunk))
        if unreadable:
            self.stderr.write(f"skipped {unreadable} unreadable photo(s)")
        return {"dog_mass": np.array(dog_mass), "confidence": np.array(confidence), "correct": np.array(correct, dtype=bool)}

    @staticmethod
    def _rates(model, signals, th) -> dict:
        verdicts = [th.verdict(dog_mass=d, confidence=c) for d, c in zip(signals["dog_mass"], signals["confidence"])]
        out = rates(verdicts)
        answered = [v == DOG for v in verdicts]
        if signals["correct"].any():
            out["top1_all"] = float(signals["correct"].mean())
            named = signals["correct"][np.array(answered, dtype=bool)] if any(answered) else np.array([])
            out["top1_when_named"] = float(named.mean()) if named.size else None
        out["false_reject_rate"] = out[f"{NOT_DOG}_rate"]
        out["withheld_rate"] = (out[NOT_DOG] + out[NOT_SURE]) / out["n"] if out["n"] else None
        return out
