"""The lecture's 32-pixel CIFAR networks: MobileNetV2 x0.5 (CIFAR-100, torch.hub) and ResNet-20
(CIFAR-10, weights in ../shared/weights).

Imports training.backbones.base, training.backbones.weights, training.errors, training.nets.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training import nets
from training.backbones.base import Backbone, PoolFlatten, ReLU, Split
from training.backbones.weights import (
    find_file,
    hub_checkpoint_dir,
    load_plain_checkpoint,
    network_reachable,
    weights_search_dirs,
)
from training.errors import WeightsUnavailable

_MNV2_FILE = "cifar100_mobilenetv2_x0_5-9f915757.pt"
_MNV2_HUB = ("chenyaofo/pytorch-cifar-models", "cifar100_mobilenetv2_x0_5")


def _hub_repo_cached(repo: str) -> bool:
    owner, name = repo.split("/")
    hub = Path(torch.hub.get_dir())
    return any(hub.glob(f"{owner}_{name}_*"))



def mnv2_entry() -> Backbone:
    def load(net: nn.Module, weights_path: str | None) -> str:
        if weights_path:
            path = Path(weights_path)
            if not path.is_file():
                raise WeightsUnavailable(f"cifar100_mobilenetv2_x0_5 checkpoint {path} does not exist.")
            load_plain_checkpoint(net, path)
            return str(path)
        local = find_file([_MNV2_FILE])
        if local is not None:
            load_plain_checkpoint(net, local)
            return str(local)
        if network_reachable() or _hub_repo_cached(_MNV2_HUB[0]):
            try:
                hub_net = torch.hub.load(*_MNV2_HUB, pretrained=True, trust_repo=True, verbose=False)
            except Exception as exc:  # noqa: BLE001 - network, cache or repo errors
                raise WeightsUnavailable(_mnv2_missing(f"torch.hub failed: {exc}")) from None
            net.load_state_dict(hub_net.state_dict(), strict=True)
            return "torch.hub " + "/".join(_MNV2_HUB)
        raise WeightsUnavailable(_mnv2_missing("torch.hub is not reachable and not cached"))

    def availability() -> tuple[bool, str]:
        local = find_file([_MNV2_FILE])
        if local is not None:
            return True, f"checkpoint {local}"
        if _hub_repo_cached(_MNV2_HUB[0]) and (hub_checkpoint_dir() / _MNV2_FILE).is_file():
            return True, "torch.hub cache"
        if network_reachable():
            return True, "downloadable through torch.hub"
        return False, _mnv2_missing("torch.hub is not reachable and not cached")

    def split(net: nn.Module) -> Split:
        feats = list(net.features)
        stages = [*feats[:-1], nn.Sequential(feats[-1], PoolFlatten())]
        return Split(stages, net.classifier[1], net.classifier[1].in_features)

    return Backbone(
        name="cifar100_mobilenetv2_x0_5",
        title="MobileNetV2 x0.5 (CIFAR-100, 32 px, the lecture's model)",
        input_size=32,
        crop_pct=1.0,
        interpolation="bicubic",
        mean=(0.507, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2761),
        original_task="cifar100",
        _construct=nets.cifar100_mobilenetv2_x0_5,
        _load_weights=load,
        _availability=availability,
        _split=split,
    )


def _mnv2_missing(why: str) -> str:
    return (
        f"cifar100_mobilenetv2_x0_5 weights are not available ({why}): either let torch.hub load "
        f'"chenyaofo/pytorch-cifar-models" once while online (it is then cached under TORCH_HOME), or pass the '
        f"checkpoint file {_MNV2_FILE} with --backbone-weights / backbone_weights (or put it in $BREEDLAB_WEIGHTS_DIR)."
    )


# ---- CIFAR-10 ResNet-20 (real weights in ../shared/weights) ----
_R20_FILES = ("cifar10_resnet20-12fca82f.th", "resnet20-12fca82f.th")


def resnet20_entry() -> Backbone:
    def load(net: nn.Module, weights_path: str | None) -> str:
        path = Path(weights_path) if weights_path else find_file(_R20_FILES)
        if path is None or not path.is_file():
            raise WeightsUnavailable(
                f"cifar10_resnet20 weights ({_R20_FILES[0]}) were not found in {', '.join(map(str, weights_search_dirs()))}; "
                "set BREEDLAB_WEIGHTS_DIR or pass --backbone-weights."
            )
        load_plain_checkpoint(net, path)
        return str(path)

    def availability() -> tuple[bool, str]:
        path = find_file(_R20_FILES)
        if path is None:
            return False, f"{_R20_FILES[0]} not found (set BREEDLAB_WEIGHTS_DIR)"
        return True, f"checkpoint {path}"

    def split(net: nn.Module) -> Split:
        stem = nn.Sequential(net.conv1, net.bn1, ReLU())
        stages = [stem, net.layer1, net.layer2, nn.Sequential(net.layer3, PoolFlatten())]
        return Split(stages, net.linear, net.linear.in_features)

    return Backbone(
        name="cifar10_resnet20",
        title="ResNet-20 (CIFAR-10, 32 px; knows cat and dog)",
        input_size=32,
        crop_pct=1.0,
        interpolation="bicubic",
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        original_task="cifar10",
        _construct=nets.cifar_resnet20,
        _load_weights=load,
        _availability=availability,
        _split=split,
    )
