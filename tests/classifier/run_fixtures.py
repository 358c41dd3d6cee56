"""Fixtures for the training-run tests: a tiny real dataset, a tiny fast config, a recorded queue.

Imported by tests/classifier/conftest.py, so every test there can ask for them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

TINY_BREEDS = ("beagle", "chihuahua", "pug")
TINY_PER_CLASS = 10
# CIFAR-10 ResNet-20 at 32 px: a few seconds per run on one CPU core.
TINY_CONFIG = {
    "backbone": "cifar10_resnet20",
    "image_size": 32,
    "head_epochs": 1,
    "finetune_epochs": 1,
    "head_solver": "epochs",
    "budget_minutes": 0,
    "augmentation": "none",
    "batch_size": 8,
    "num_workers": 0,
    "device": "cpu",
}


def copy_tiny_dataset(source: Path, target: Path, *, breeds=TINY_BREEDS, per_class: int = TINY_PER_CLASS) -> None:
    """Copy (not link: dataset images are served only from inside the dataset folder) a few photos."""
    for breed in breeds:
        (target / breed).mkdir(parents=True, exist_ok=True)
        for photo in sorted((source / breed).iterdir())[:per_class]:
            shutil.copyfile(photo, target / breed / photo.name)


def make_dataset_row(folder: Path, relpath: str, *, name: str = "tiny", version: int = 1):
    """A ready Dataset row for an ImageFolder under DATASETS_ROOT, with a real report and split."""
    from classifier.datasets.importing import split_files
    from classifier.datasets.report import build_report
    from classifier.models import Dataset

    report = build_report(folder)
    split = split_files(report["usable_files"], folder=folder, val_fraction=0.2, seed=0, inherit=None)
    return Dataset.objects.create(
        name=name,
        version=version,
        path=relpath,
        status=Dataset.Status.READY,
        classes=sorted(report["usable_files"]),
        image_count=report["total_images"],
        report={k: v for k, v in report.items() if k != "usable_files"},
        split=split,
    )


@pytest.fixture
def tiny_weights():
    """Skips the test where the CIFAR-10 ResNet-20 weights (../shared/weights) are missing."""
    from training.backbones import get_backbone

    info = get_backbone("cifar10_resnet20").info()
    if not info.weights_available:
        pytest.skip(f"cifar10_resnet20 weights are missing: {info.weights_detail}")


@pytest.fixture
def tiny_dataset(db, settings, stanford_dogs_dir, tiny_weights):
    """3 real breeds x 10 photos copied into this test's DATASETS_ROOT, as a ready Dataset row."""
    folder = Path(settings.DATASETS_ROOT) / "tiny" / "v1"
    copy_tiny_dataset(stanford_dogs_dir, folder)
    return make_dataset_row(folder, "tiny/v1")


@pytest.fixture
def enqueued(monkeypatch):
    """Record what would be sent to the `training` queue instead of talking to a broker."""
    from classifier.runs import tasks

    calls: list[dict] = []

    def fake_apply_async(args=None, kwargs=None, **options):
        calls.append({"args": args, **options})

    monkeypatch.setattr(tasks.execute_run, "apply_async", fake_apply_async)
    return calls
