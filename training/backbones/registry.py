"""The registry: every backbone by name, the default one, and the lookups the rest of training/
(and the Django app) use.

Imports the family modules; nothing imports it back from inside backbones/ but original.py.
"""

from __future__ import annotations

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


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}; valid backbones are {', '.join(BACKBONES)}.") from None


def list_backbones() -> list[BackboneInfo]:
    return [b.info() for b in BACKBONES.values()]
