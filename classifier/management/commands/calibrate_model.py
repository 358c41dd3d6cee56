"""manage.py calibrate_model: choose the not-a-dog / not-sure thresholds of a model and measure them.

    manage.py calibrate_model 7                      # model version 7 (its folder under RUNS_ROOT)
    manage.py calibrate_model --run-dir var/runs/x   # any run folder
    manage.py calibrate_model --builtin              # the built-in model (118 ImageNet dog breeds):
        its accuracy and thresholds on --dogs (default $BREEDLAB_SHARED_DIR/datasets/stanford-dogs-120)
        and its false accepts on --not-dogs (default $BREEDLAB_SHARED_DIR/datasets/not-dogs);
        stored on its model version (shown on /models/); BREEDLAB_SHARED_DIR defaults to ../shared
        [--data-dir DIR]    where validation.json's photos are (default: the run's own data folder)
        [--dogs DIR]        held-out dog photos of the model's breeds (<breed>/<photo>): false rejects
        [--not-dogs DIR]    photos without dogs (e.g. ../shared/datasets/not-dogs): false accepts
        [--target 0.03]     at most this share of validation dogs rejected by each test
        [--dry-run]         print, do not write calibration.json

Thresholds come from the validation photos only (see classifier/serving/calibration.py); the rates on
--dogs/--not-dogs are measured with those thresholds and stored beside them. Every run that
succeeds is calibrated by the worker already (target 3%); this command recalibrates, with other
photos or another target, and measures false accepts and rejects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from classifier.models import ModelVersion
from classifier.serving.cache import run_dir_for
from classifier.serving.calibrate import (
    CalibrationError,
    builtin_calibrate,
    builtin_calibration_save,
    calibrate_run_dir,
    calibration_save,
)


def shared_dir() -> Path:
    return Path(os.environ.get("BREEDLAB_SHARED_DIR") or Path(settings.BASE_DIR).parent / "shared")


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
        parser.add_argument("--builtin", action="store_true", help="the built-in model (pretrained ImageNet dog classes)")

    def handle(self, *args, **opts):
        if opts["builtin"]:
            return self._builtin(opts)
        run_dir = self._run_dir(opts)
        for name in ("dogs", "not_dogs"):
            if opts[name] is not None and not opts[name].is_dir():
                raise CommandError(f"--{name.replace('_', '-')} {opts[name]} is not a folder.")
        if opts["data_dir"] is not None and not opts["data_dir"].is_dir():
            raise CommandError(f"--data-dir {opts['data_dir']} is not a folder.")
        try:
            report = calibrate_run_dir(
                run_dir, data_dir=opts["data_dir"], target=opts["target"], dogs=opts["dogs"], not_dogs=opts["not_dogs"]
            )
        except CalibrationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(report, indent=2))
        if not opts["dry_run"]:
            path = calibration_save(report=report, run_dir=run_dir)
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

    def _builtin(self, opts) -> None:
        if opts["version"] is not None or opts["run_dir"] is not None or opts["data_dir"] is not None:
            raise CommandError("--builtin takes no model version, --run-dir or --data-dir.")
        dogs = opts["dogs"] or shared_dir() / "datasets" / "stanford-dogs-120"
        not_dogs = opts["not_dogs"] or shared_dir() / "datasets" / "not-dogs"
        if not dogs.is_dir():
            raise CommandError(f"{dogs} is not a folder: give --dogs DIR (<breed>/<photo>).")
        if opts["not_dogs"] is not None and not not_dogs.is_dir():
            raise CommandError(f"--not-dogs {not_dogs} is not a folder.")
        try:
            report = builtin_calibrate(dogs=dogs, not_dogs=not_dogs if not_dogs.is_dir() else None, target=opts["target"])
        except CalibrationError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(report, indent=2))
        if not opts["dry_run"]:
            version = builtin_calibration_save(report=report)
            self.stdout.write(self.style.SUCCESS(f"Stored on model version {version.pk} ({version.name})"))
