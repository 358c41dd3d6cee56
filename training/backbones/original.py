"""The pretrained model's own task: matching a dataset's classes to the original classes, starting a
new head from the original classifier's rows, and ``OriginalModel`` (the network with its
original head, for showing what it sees in a photo).

Imports the registry, classes and training.data / training.model.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from training.backbones.base import Backbone
from training.backbones.classes import CIFAR10_CLASSES, imagenet_dog_indices, normalize_name
from training.backbones.registry import get_backbone
from training.data import EvalTransform, decode_image
from training.model import TransferModel


def _folder_wnids(data_dir: Path | None) -> dict[str, str]:
    """``breeds.csv``/``classes.csv`` next to the class folders: columns folder, wnid."""
    if data_dir is None:
        return {}
    for name in ("breeds.csv", "classes.csv"):
        path = Path(data_dir) / name
        if path.is_file():
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            if rows and {"folder", "wnid"} <= set(rows[0]):
                return {r["folder"]: r["wnid"].strip().lower() for r in rows}
    return {}


def match_original_classes(backbone: Backbone, class_names: Sequence[str], data_dir: Path | None = None) -> dict[int, int]:
    """``{new class index: original class index}`` for classes the pretrained model already knows.

    A class matches by WordNet id (a ``breeds.csv`` with columns folder,wnid beside the class
    folders, or a folder named like ``n02099601``) or by name against the original class names
    and synonyms ("golden_retriever" -> "golden retriever").
    """
    keys = backbone.original_class_keys()
    index: dict[str, int] = {}
    for j, ks in enumerate(keys):
        for k in ks:
            index.setdefault(k, j)
    wnids = _folder_wnids(data_dir)
    matches: dict[int, int] = {}
    for i, name in enumerate(class_names):
        for key in (wnids.get(name), name.lower(), normalize_name(name)):
            if key and key in index:
                matches[i] = index[key]
                break
    return matches


@torch.no_grad()
def init_head_from_classifier(model: TransferModel, classifier: nn.Linear, matches: dict[int, int]) -> None:
    """Copy the original classifier's rows into the new head for matched classes.

    Unmatched rows keep their fresh initialisation, with the mean matched bias so that they
    start on the same footing.
    """
    if not matches:
        return
    new_idx = torch.tensor(sorted(matches))
    old_idx = torch.tensor([matches[i] for i in sorted(matches)])
    model.head.weight[new_idx] = classifier.weight[old_idx].to(model.head.weight.dtype)
    if classifier.bias is not None:
        model.head.bias[new_idx] = classifier.bias[old_idx].to(model.head.bias.dtype)
        unmatched = [i for i in range(model.num_classes) if i not in matches]
        if unmatched:
            model.head.bias[torch.tensor(unmatched)] = classifier.bias[old_idx].mean()



# ---------------------------------------------------------------------------------------------
# "What the pretrained model sees": the original network with its original head
# ---------------------------------------------------------------------------------------------
class OriginalModel:
    """The pretrained network with its original classifier, for showing its view of a photo."""

    def __init__(self, backbone: Backbone, net: nn.Module) -> None:
        self.backbone = backbone
        self.net = net.eval()
        self.class_names = backbone.original_classes
        pre = backbone.preprocessing()
        self._resize = pre["resize_size"]
        self._transform = EvalTransform(size=pre["image_size"], mean=pre["mean"], std=pre["std"])
        self.dog_indices = imagenet_dog_indices() if backbone.original_task == "imagenet" else frozenset(
            [CIFAR10_CLASSES.index("dog")] if backbone.original_task == "cifar10" else []
        )

    @classmethod
    def load(cls, name: str, *, weights_path: str | None = None) -> OriginalModel:
        backbone = get_backbone(name)
        return cls(backbone, backbone.build(pretrained=True, weights_path=weights_path))

    def _batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack(
            [self._transform(decode_image(img, self._resize, self.backbone.interpolation)) for img in images]
        )

    @torch.inference_mode()
    def probabilities(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Softmax over the original classes, shape (len(images), num_original_classes)."""
        if not images:
            return torch.zeros(0, len(self.class_names))
        return torch.softmax(self.net(self._batch(images)).float(), dim=1)

    def predict(self, images: Sequence[Image.Image], top_k: int = 5) -> list[list[tuple[str, float]]]:
        probs = self.probabilities(images)
        k = min(top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        return [
            [(self.class_names[int(i)], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values, indices)
        ]

    def dog_probability(self, images: Sequence[Image.Image]) -> list[float]:
        """Probability mass on dog classes (ImageNet: the 118 dog breeds; CIFAR-10: "dog")."""
        probs = self.probabilities(images)
        if not self.dog_indices:
            return [0.0] * len(images)
        idx = torch.tensor(sorted(self.dog_indices))
        return [float(p) for p in probs[:, idx].sum(dim=1)]
