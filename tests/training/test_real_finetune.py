"""Small real fine-tunes on a few Stanford Dogs breeds (photos read from ../shared, never copied)."""

from pathlib import Path

import pytest

from training.config import TrainConfig
from training.finetune import finetune
from training.predict import Predictor, evaluate_folder

BREEDS = ["pug", "samoyed", "beagle", "german_shepherd"]


@pytest.fixture
def four_breeds(stanford_dogs_dir, tmp_path) -> Path:
    root = tmp_path / "dogs"
    root.mkdir()
    for breed in BREEDS:
        (root / breed).symlink_to(stanford_dogs_dir / breed, target_is_directory=True)
    return root


@pytest.mark.slow
def test_a_small_real_finetune_learns_well_above_chance(four_breeds, tmp_path):
    config = TrainConfig(
        data_dir=str(four_breeds),
        backbone="efficientnet_lite0",
        val_fraction=0.25,
        image_size=128,
        head_epochs=4,
        finetune_epochs=1,
        unfreeze_blocks=1,
        init_head_from_pretrained=False,
        augmentation="none",
        device="cpu",
        num_workers=0,
    )
    result = finetune(config, out_dir=tmp_path / "run")
    assert result.metrics["val_images"] == 40
    assert result.metrics["initial_val_acc"] < 0.6  # a fresh head knows nothing
    assert result.metrics["val_acc"] >= 0.75  # chance is 0.25
    report = evaluate_folder(Predictor.from_dir(tmp_path / "run"), four_breeds)
    assert report["n"] == 160 and report["top1"] >= 0.8


@pytest.mark.slow
def test_head_from_pretrained_rows_is_strong_before_the_first_epoch(four_breeds, tmp_path):
    config = TrainConfig(
        data_dir=str(four_breeds), backbone="efficientnet_lite0", val_fraction=0.25, head_epochs=1, finetune_epochs=0, augmentation="none",
        device="cpu", num_workers=0,
    )
    result = finetune(config, out_dir=tmp_path / "run")
    assert result.metrics["initial_val_acc"] >= 0.9
    assert result.metrics["val_acc"] >= 0.9
