"""torchvision's ImageNet models (ResNet-18, MobileNetV3-Large, EfficientNet-B0): weights from
torch.hub's cache or download.pytorch.org.

Imports training.backbones.base, training.backbones.weights, training.errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import nn

from training.backbones.base import Backbone, PoolFlatten, Split
from training.backbones.weights import find_file, hub_checkpoint_dir, load_plain_checkpoint, network_reachable
from training.errors import WeightsUnavailable


def torchvision_entry(name: str, title: str, weights_enum: str, split: Callable[[nn.Module], Split]) -> Backbone:
    import torchvision

    weights = torchvision.models.get_weight(weights_enum)
    tf = weights.transforms()
    crop = int(tf.crop_size[0])
    resize = int(tf.resize_size[0])
    interpolation = "bicubic" if "BICUBIC" in str(tf.interpolation) else "bilinear"
    filename = os.path.basename(weights.url)

    def construct() -> nn.Module:
        return torchvision.models.get_model(name, weights=None)

    def load(net: nn.Module, weights_path: str | None) -> str:
        if weights_path:
            path = Path(weights_path)
            if not path.is_file():
                raise WeightsUnavailable(f"{name} checkpoint {path} does not exist.")
            load_plain_checkpoint(net, path)
            return str(path)
        local = find_file([filename])
        if local is not None:
            load_plain_checkpoint(net, local)
            return str(local)
        if not network_reachable("download.pytorch.org"):
            raise WeightsUnavailable(_tv_missing(name, filename))
        try:
            net.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
        except Exception as exc:  # noqa: BLE001
            raise WeightsUnavailable(f"{_tv_missing(name, filename)} Download failed: {exc}") from None
        return weights.url

    def availability() -> tuple[bool, str]:
        local = find_file([filename])
        if local is not None:
            return True, f"cached {local}"
        if network_reachable("download.pytorch.org"):
            return True, f"downloadable through torchvision ({weights_enum})"
        return False, _tv_missing(name, filename)

    return Backbone(
        name=name,
        title=title,
        input_size=crop,
        crop_pct=crop / resize,
        interpolation=interpolation,
        mean=tuple(tf.mean),
        std=tuple(tf.std),
        original_task="imagenet",
        _construct=construct,
        _load_weights=load,
        _availability=availability,
        _split=split,
    )


def _tv_missing(name: str, filename: str) -> str:
    return (
        f"{name} ImageNet weights ({filename}) are not cached in {hub_checkpoint_dir()} and the download server "
        "is not reachable; download them once while online or pass --backbone-weights."
    )


def split_resnet(net: nn.Module) -> Split:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [stem, net.layer1, net.layer2, net.layer3, nn.Sequential(net.layer4, PoolFlatten())]
    return Split(stages, net.fc, net.fc.in_features)


def split_mobilenet_v3(net: nn.Module) -> Split:
    feats = list(net.features)
    last = nn.Sequential(feats[-1], PoolFlatten(), net.classifier[0], net.classifier[1])
    return Split([*feats[:-1], last], net.classifier[3], net.classifier[3].in_features)


def split_efficientnet(net: nn.Module) -> Split:
    feats = list(net.features)
    stages = [*feats[:-1], nn.Sequential(feats[-1], PoolFlatten())]
    return Split(stages, net.classifier[1], net.classifier[1].in_features)
