"""The fine-tuned network: a pretrained backbone cut into stages plus a new linear head.

``TransferModel.stages`` run in order; the last stage ends with global pooling, so its output is
a feature vector. "Unfreeze the last N blocks" means the last N stages. Frozen stages have
``requires_grad = False`` and stay in eval mode (BatchNorm statistics frozen) even when the
model is put into training mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TransferModel(nn.Module):
    def __init__(self, stages: Sequence[nn.Module], num_features: int, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)
        self.num_features = num_features
        self.num_classes = num_classes
        self.trainable_from = 0  # index of the first stage that trains
        self.freeze_batchnorm = False  # also keep BatchNorm statistics of trainable stages fixed

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def forward_stages(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for stage in self.stages[start:stop]:
            x = stage(x)
        return x

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward_from(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Logits for input ``x`` of stage ``start`` (0 = images, num_stages = pooled features)."""
        return self.forward_head(self.forward_stages(x, start))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if mode:
            for stage in self.stages[: self.trainable_from]:
                stage.eval()  # frozen BatchNorm statistics (and no dropout/drop-path)
            if self.freeze_batchnorm:
                for module in self.stages.modules():
                    if isinstance(module, nn.modules.batchnorm._BatchNorm):
                        module.eval()  # statistics fixed; affine weights still train
        return self

    # ---- freezing ------------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Head phase: every backbone parameter frozen, BatchNorm statistics frozen."""
        self.unfreeze_last(0)

    def unfreeze_last(self, n: int | None) -> None:
        """Train the last ``n`` stages and the head (None or -1 = every stage)."""
        if n is None or n < 0 or n > self.num_stages:
            n = self.num_stages
        self.trainable_from = self.num_stages - n
        for i, stage in enumerate(self.stages):
            for p in stage.parameters():
                p.requires_grad_(i >= self.trainable_from)
        for p in self.head.parameters():
            p.requires_grad_(True)
        self.train(self.training)

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for stage in self.stages for p in stage.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())


def param_groups(
    model: TransferModel, *, head_lr: float, backbone_lr: float, weight_decay: float
) -> list[dict]:
    """Optimizer groups: head and trainable backbone, each split into decay / no-decay (biases, norms)."""
    groups: list[dict] = []

    def add(params: list[nn.Parameter], lr: float, name: str) -> None:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": f"{name}"})
        if no_decay:
            groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}_no_decay"})

    add(model.backbone_parameters(), backbone_lr, "backbone")
    add(model.head_parameters(), head_lr, "head")
    return groups
