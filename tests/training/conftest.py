"""Factories for the training tests: tiny image folders made with Pillow, tiny configs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from training.config import TrainConfig

COLORS = {
    "red": (200, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 60, 200),
    "yellow": (220, 200, 40),
}


def make_image(color: tuple[int, int, int], *, size: int = 40, seed: int = 0) -> Image.Image:
    """A noisy image dominated by ``color`` with a random darker rectangle."""
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(max(0, min(255, c + rng.randint(-30, 30))) for c in color))
    draw = ImageDraw.Draw(img)
    x0, y0 = rng.randint(0, size // 2), rng.randint(0, size // 2)
    draw.rectangle([x0, y0, x0 + size // 3, y0 + size // 3], fill=tuple(c // 2 for c in color))
    return img


def make_image_folder(
    root: Path, counts: dict[str, int], *, size: int = 40, fmt: str = "png", seed: int = 0
) -> Path:
    """``root/<class>/<i>.png`` with ``counts[class]`` images; class colours from COLORS."""
    root.mkdir(parents=True, exist_ok=True)
    for ci, (name, n) in enumerate(counts.items()):
        color = COLORS.get(name, list(COLORS.values())[ci % len(COLORS)])
        (root / name).mkdir(exist_ok=True)
        for i in range(n):
            make_image(color, size=size, seed=seed * 1000 + ci * 100 + i).save(root / name / f"{i:03d}.{fmt}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three colour classes x 12 images of 40x40 px."""
    return make_image_folder(tmp_path / "data", {"red": 12, "green": 12, "blue": 12})


@pytest.fixture(scope="session")
def resnet20_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised CIFAR ResNet-20 checkpoint (no shared data needed)."""
    from training.nets import cifar_resnet20

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet20-random.th"
    torch.save({"state_dict": cifar_resnet20().state_dict()}, path)
    return path


@pytest.fixture
def tiny_config(image_folder: Path, resnet20_checkpoint: Path) -> TrainConfig:
    """cifar10_resnet20 at 32 px, 2 head + 2 finetune epochs (the lecture's epoch-trained head), CPU, no workers."""
    return TrainConfig(
        data_dir=str(image_folder),
        backbone="cifar10_resnet20",
        backbone_weights=str(resnet20_checkpoint),
        budget_minutes=0,
        head_solver="epochs",
        head_epochs=2,
        finetune_epochs=2,
        unfreeze_blocks=1,
        optimizer="adam",
        head_lr=1e-2,
        finetune_lr=1e-3,
        batch_size=8,
        augmentation="none",
        label_smoothing=0.0,
        seed=0,
        device="cpu",
        num_workers=0,
        init_head_from_pretrained=False,
        early_stopping_patience=0,
        freeze_batchnorm=False,
    )
