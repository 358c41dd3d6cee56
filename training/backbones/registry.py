"""The registry: every backbone by name, the default one, and the lookups the rest of training/
(and the Django app) use.

Imports the family modules; nothing imports it back from inside backbones/ but original.py.
"""

from __future__ import annotations

from typing import Any

import torch

from training.backbones.base import Backbone, BackboneInfo
from training.backbones.cifar import mnv2_entry, resnet20_entry
from training.backbones.efficientnet_lite import lite_entry
from training.backbones.torchvision_models import (
    split_efficientnet,
    split_mobilenet_v3,
    split_resnet,
    torchvision_entry,
)
from training.errors import ConfigError
from training.plan import choose_backbone


def _registry() -> dict[str, Backbone]:
    entries = [
        lite_entry(0),
        lite_entry(1),
        lite_entry(2),
        mnv2_entry(),
        resnet20_entry(),
        torchvision_entry("resnet18", "ResNet-18 (torchvision, ImageNet)", "ResNet18_Weights.IMAGENET1K_V1", split_resnet),
        torchvision_entry(
            "mobilenet_v3_large",
            "MobileNetV3-Large (torchvision, ImageNet)",
            "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
            split_mobilenet_v3,
        ),
        torchvision_entry(
            "efficientnet_b0", "EfficientNet-B0 (torchvision, ImageNet)", "EfficientNet_B0_Weights.IMAGENET1K_V1", split_efficientnet
        ),
    ]
    return {e.name: e for e in entries}


BACKBONES: dict[str, Backbone] = _registry()
DEFAULT_BACKBONE = "efficientnet_lite0"
# ``backbone="auto"`` (the CLI's default): the run times these, strongest last, and takes the
# strongest that fits its budget (training.plan.choose_backbone). Measured (bench/RESULTS.md):
# logistic regression on Lite2's frozen features beats Lite0's by 6.6 points on dogs-120 (82.4% vs 75.8%).
AUTO_BACKBONE = "auto"
AUTO_CANDIDATES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# When the pretrained classifier knows every class (its rows are the head's prior) the strongest
# candidate is best too: measured with bench/known_classes.py on dogs-20 (photos outside the
# recipe's test part, 20 seeded re-splits, the head with the prior, test top-1 mean ± standard
# error): Lite0 96.0 ± 0.5%, Lite1 97.3 ± 0.4%, Lite2 97.5 ± 0.3% at its own 260 px and
# 98.2 ± 0.3% at 300 px (KNOWN_PHOTOS_SIZES, below), which is what such runs try first.
# Photos of classes the pretrained network has (every class matched by name, with or without head
# init) are the kind it was trained on, and for them its frozen features are better at a larger input
# than its own (the train/test resolution discrepancy, Touvron et al. 2019). auto then also tries
# these sizes, above the network's own. Measured on dogs-20 photos outside the recipe's test part,
# 20 seeded re-splits, the head without the prior (bench/head_views.py --image-size, 4 views; test
# top-1 mean ± standard error): Lite2 95.3 ± 0.5% at 260 px, 96.4 ± 0.3% at 300 (paired +1.1 ± 0.4
# points), 96.5 ± 0.4% at 340. On flowers-12, classes it lacks, 300 px lost 0.5 ± 0.3 points, so
# other photos keep the network's own size.
KNOWN_PHOTOS_SIZES = {"efficientnet_lite2": 300}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}; valid backbones are {', '.join(BACKBONES)}.") from None


def check_backbone(name: str) -> None:
    """ConfigError unless ``name`` is a registered backbone or ``auto`` (chosen to fit the budget)."""
    if name != AUTO_BACKBONE and name not in BACKBONES:
        raise ConfigError(
            f"Unknown backbone {name!r}; valid backbones are {AUTO_BACKBONE} (chosen to fit the budget), {', '.join(BACKBONES)}."
        )


def list_backbones() -> list[BackboneInfo]:
    return [b.info() for b in BACKBONES.values()]


def choose_auto_backbone(
    *, image_size: int | None, device: torch.device, budget_s: float | None, spent_s: float, n_photos: int,
    classes_known: bool = False, photos_known: bool = False,
) -> dict[str, Any]:
    """``backbone="auto"``: the strongest of ``AUTO_CANDIDATES`` with weights here whose pass over
    ``n_photos`` fits the budget (``training.plan.choose_backbone``), each timed on ``device``.
    ``classes_known``: the head starts from the pretrained rows (only the reason says so);
    ``photos_known``: every class is one the pretrained network has, so ``KNOWN_PHOTOS_SIZES`` are
    tried too (unless ``image_size`` is set).
    Returns the record a run keeps: name, image_size, reason, the timings (ms per photo)."""
    candidates = []  # weakest first
    for n in (n for n in AUTO_CANDIDATES if BACKBONES[n].info().weights_available):
        candidates.append((n, image_size or BACKBONES[n].input_size))
        if photos_known and image_size is None and n in KNOWN_PHOTOS_SIZES:
            candidates.append((n, KNOWN_PHOTOS_SIZES[n]))
    if not candidates:
        raise ConfigError(f"backbone auto needs the weights of one of {', '.join(AUTO_CANDIDATES)}; none is installed here.")
    option, timed, reason = choose_backbone(
        candidates, time_forward=lambda name, size: BACKBONES[name].time_forward(size, device=device),
        budget_s=budget_s, spent_s=spent_s, n_photos=n_photos, classes_known=classes_known,
    )
    return {"name": option.name, "image_size": option.image_size, "reason": reason,
            "timed_ms_per_photo": {f"{o.name}@{o.image_size}": round(o.forward_s * 1000, 2) for o in timed}}
