"""What every backbone is: the ``Backbone`` registry entry (build, split, preprocessing, original
classes), its ``BackboneInfo`` summary and the ``Split`` of a network for transfer learning.

Imports training.model, training.data (preprocessing sizes) and backbones.classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.backbones.classes import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    imagenet_class_names,
    imagenet_info,
    normalize_name,
)
from training.data import resize_size_for
from training.model import TransferModel


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    title: str
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    original_task: str
    original_classes: list[str]
    weights_available: bool
    weights_detail: str

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["num_original_classes"] = len(self.original_classes)
        return d


@dataclass(frozen=True)
class Split:
    """A network cut for transfer learning."""

    stages: list[nn.Module]
    classifier: nn.Linear
    num_features: int


class PoolFlatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class ReLU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


@dataclass(frozen=True)
class Backbone:
    """One registry entry. ``build`` returns the original network (original head included)."""

    name: str
    title: str
    input_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    original_task: str  # "imagenet" | "cifar10" | "cifar100"
    _construct: Callable[[], nn.Module] = field(repr=False)
    _load_weights: Callable[[nn.Module, str | None], str] = field(repr=False)
    _availability: Callable[[], tuple[bool, str]] = field(repr=False)
    _split: Callable[[nn.Module], Split] = field(repr=False)

    # ---- metadata ------------------------------------------------------------------------
    @property
    def original_classes(self) -> list[str]:
        if self.original_task == "imagenet":
            return imagenet_class_names()
        if self.original_task == "cifar10":
            return list(CIFAR10_CLASSES)
        return list(CIFAR100_CLASSES)

    def original_class_keys(self) -> list[set[str]]:
        """For each original class, the keys a dataset folder may match (wnid, names, synonyms)."""
        if self.original_task == "imagenet":
            wnids, descriptions = imagenet_info()
            return [{w.lower()} | {normalize_name(s) for s in d.split(",")} for w, d in zip(wnids, descriptions)]
        return [{normalize_name(c)} for c in self.original_classes]

    def title_at(self, image_size: int | None) -> str:
        """The title naming the input size a model really uses (titles name the network's own)."""
        if not image_size or image_size == self.input_size:
            return self.title
        return self.title.replace(f"{self.input_size} px", f"{image_size} px")

    def info(self, weights_path: str | None = None) -> BackboneInfo:
        if weights_path:
            ok, detail = Path(weights_path).is_file(), f"checkpoint file {weights_path}"
            if not ok:
                detail = f"checkpoint file {weights_path} does not exist"
        else:
            ok, detail = self._availability()
        return BackboneInfo(
            name=self.name,
            title=self.title,
            input_size=self.input_size,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
            original_task=self.original_task,
            original_classes=self.original_classes,
            weights_available=ok,
            weights_detail=detail,
        )

    def preprocessing(self, image_size: int | None = None) -> dict[str, Any]:
        size = image_size or self.input_size
        return {
            "image_size": size,
            "resize_size": resize_size_for(size, self.crop_pct),
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    # ---- building ------------------------------------------------------------------------
    def build(self, *, pretrained: bool = True, weights_path: str | None = None) -> nn.Module:
        """The original network; with ``pretrained`` its weights are loaded (WeightsUnavailable if not here)."""
        net = self._construct()
        if pretrained:
            self._load_weights(net, weights_path)
        net.eval()
        return net

    def split(self, net: nn.Module) -> Split:
        return self._split(net)

    def time_forward(self, image_size: int | None = None, *, device: torch.device | None = None, n: int = 8) -> float:
        """Seconds per photo of the whole network (evaluation mode, a batch of ``n``) on ``device``:
        the fastest of three timed passes after two warm-ups (measured: one warm-up and two passes
        read Lite2 at 356 ms a photo in a fresh process, against 41 ms in a 4,800-photo pass). Random
        weights: the cost is the same."""
        import time

        device = device or torch.device("cpu")
        size = image_size or self.input_size
        net = self._construct().eval().to(device, memory_format=torch.channels_last)
        x = torch.randn(n, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
        best = float("inf")
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            for i in range(5):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                net(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 2:
                    best = min(best, time.perf_counter() - t0)
        return best / n

    def transfer_model(
        self,
        num_classes: int,
        *,
        pretrained: bool = True,
        weights_path: str | None = None,
        dropout: float = 0.0,
    ) -> tuple[TransferModel, Split]:
        """A ``TransferModel`` with a freshly initialised head, and the split (original classifier)."""
        parts = self.split(self.build(pretrained=pretrained, weights_path=weights_path))
        model = TransferModel(parts.stages, parts.num_features, num_classes, dropout=dropout)
        return model, parts

