"""A real fine-tuned model, trained once per test session, and ways to make it the active version.

``finetuned_run`` fine-tunes EfficientNet-Lite0's head on 4 real breeds x 20 photos from
../shared (about 15-25 s on two CPU cores, cached features). ``active_model`` links that run
folder into the test's RUNS_ROOT and registers it as the active ModelVersion. Imported by
tests/classifier/conftest.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

TEST_BREEDS = ("beagle", "golden_retriever", "pug", "siberian_husky")
TRAIN_PER_BREED = 20


@pytest.fixture(scope="session")
def finetuned_run(stanford_dogs_dir, tmp_path_factory) -> Path:
    """A finished run folder (model.safetensors, meta.json, validation.json) for TEST_BREEDS."""
    from training.config import TrainConfig
    from training.finetune import finetune

    data = tmp_path_factory.mktemp("dogs4")
    for breed in TEST_BREEDS:
        (data / breed).mkdir()
        for photo in sorted((stanford_dogs_dir / breed).iterdir())[:TRAIN_PER_BREED]:
            os.symlink(photo, data / breed / photo.name)
    out = tmp_path_factory.mktemp("run-dogs4")
    config = TrainConfig(
        data_dir=str(data), backbone="efficientnet_lite0", head_epochs=2, finetune_epochs=0, augmentation="none", device="cpu", num_workers=0, seed=0
    )
    finetune(config, out_dir=out)
    return out


@pytest.fixture(scope="session")
def held_out_photos(stanford_dogs_dir) -> dict[str, list[Path]]:
    """Photos of TEST_BREEDS the model never saw (neither training nor validation)."""
    return {b: sorted((stanford_dogs_dir / b).iterdir())[TRAIN_PER_BREED:] for b in TEST_BREEDS}


@pytest.fixture(scope="session")
def perturbed_run(finetuned_run, tmp_path_factory) -> Path:
    """A second, different model: the same run with its head's biases shifted (same answers, other bytes)."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("run-dogs4-b")
    for item in finetuned_run.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    state = load_file(str(finetuned_run / "model.safetensors"))
    state["head.bias"] = state["head.bias"] + torch.linspace(0.0, 0.01, state["head.bias"].numel())
    save_file(state, str(out / "model.safetensors"))
    return out


@pytest.fixture
def register_version(db, settings):
    """``register(run_folder, name=..., active=True)``: link a run folder into RUNS_ROOT and add its ModelVersion."""
    from django.utils import timezone

    from classifier.models import ModelVersion

    def register(folder: Path, *, name: str = "dogs4", active: bool = True) -> ModelVersion:
        link = Path(settings.RUNS_ROOT) / name
        if not link.exists():
            os.symlink(folder, link)
        meta = json.loads((folder / "meta.json").read_text())
        if active:
            ModelVersion.objects.filter(is_active=True).update(is_active=False)
        return ModelVersion.objects.create(
            name=name,
            backbone=meta["backbone"],
            path=name,
            class_names=meta["class_names"],
            metrics=meta.get("metrics", {}),
            is_active=active,
            promoted_at=timezone.now() if active else None,
        )

    return register


@pytest.fixture
def active_model(finetuned_run, register_version):
    """The session's fine-tuned model as the active version."""
    return register_version(finetuned_run)


@pytest.fixture
def fresh_serving(settings):
    """Rate limit counters and the per-process model cache start empty (loaded models are kept by files)."""
    from django.core.cache import cache

    from classifier.serving import cache as inference

    cache.clear()
    inference.reset_current()
    yield
    cache.clear()
    inference.reset_current()
