"""Run configuration: one frozen dataclass, JSON-safe, validated with one clear sentence.

The defaults are the recipe measured best in ``bench/RESULTS.md`` (EfficientNet-Lite0, head from
the pretrained ImageNet rows, a short head phase on cached features, then the last blocks
unfrozen on cached outputs of the frozen part).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from training.errors import ConfigError

SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("none", "light", "standard")
DEVICES = ("auto", "cpu", "cuda")
# Known optimizer names (training.optim owns the table; this list only guards validate()).
OPTIMIZER_NAMES = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")

_PATH_FIELDS = ("data_dir", "val_dir", "split_file", "backbone_weights")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run depends on. ``to_dict``/``from_dict`` round-trip through JSON."""

    data_dir: str
    val_dir: str | None = None
    val_fraction: float = 0.2
    split_file: str | None = None
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    image_size: int | None = None
    # Phases: the frozen "head" phase, then the "finetune" phase with the last blocks unfrozen.
    head_epochs: int = 3
    finetune_epochs: int = 1
    unfreeze_blocks: int | None = 2
    optimizer: str = "adamw"
    head_lr: float = 1e-3
    finetune_lr: float = 3e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    label_smoothing: float = 0.1
    batch_size: int = 32
    augmentation: str = "none"
    # Keep BatchNorm statistics fixed in the unfrozen stages too (small datasets: 30-40 photos
    # per class give noisy batch statistics); the affine BatchNorm weights still train.
    freeze_batchnorm: bool = True
    # Cached frozen-part outputs: how many views of each training image to cache (the first one is
    # the plain evaluation view); every epoch draws one of them per image. 0 = 1 without
    # augmentation, 2 with it.
    feature_views: int = 0
    cache_features: bool = True
    head_dropout: float = 0.0
    early_stopping_patience: int = 1
    seed: int = 0
    device: str = "auto"
    num_workers: int = -1
    init_head_from_pretrained: bool = True

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (paths as strings)."""
        out = dataclasses.asdict(self)
        for name in _PATH_FIELDS:
            if out[name] is not None:
                out[name] = str(out[name])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys raise ConfigError naming them."""
        if not isinstance(data, dict):
            raise ConfigError("The training configuration must be a JSON object.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown configuration key(s): {', '.join(unknown)}; valid keys are {', '.join(sorted(known))}."
            )
        if "data_dir" not in data:
            raise ConfigError("The configuration needs data_dir, the folder with one sub-folder per class.")
        values = dict(data)
        for name in _PATH_FIELDS:
            if values.get(name) is not None:
                values[name] = str(values[name])
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - defensive, fields() checked above
            raise ConfigError(f"Invalid configuration: {exc}.") from exc

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # ---- derived values ------------------------------------------------------------------
    @property
    def views(self) -> int:
        """Number of cached views per training image."""
        if self.augmentation == "none":
            return 1
        return self.feature_views if self.feature_views > 0 else 2

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Raise ConfigError with one clear sentence for the first invalid value; return self."""

        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ConfigError(message)

        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        need(isinstance(self.data_dir, str) and self.data_dir != "", "data_dir must name a folder.")
        need(
            is_num(self.val_fraction) and 0.0 < self.val_fraction < 1.0,
            f"val_fraction must be between 0 and 1 (exclusive), got {self.val_fraction!r}.",
        )
        need(
            not (self.val_dir and self.split_file),
            "Give either val_dir or split_file, not both.",
        )
        need(isinstance(self.backbone, str) and self.backbone != "", "backbone must be a name.")
        need(
            self.image_size is None or (is_int(self.image_size) and 16 <= self.image_size <= 1024),
            f"image_size must be an integer between 16 and 1024, got {self.image_size!r}.",
        )
        for name in ("head_epochs", "finetune_epochs"):
            value = getattr(self, name)
            need(is_int(value) and value >= 0, f"{name} must be a whole number >= 0, got {value!r}.")
        need(self.head_epochs + self.finetune_epochs > 0, "At least one of head_epochs and finetune_epochs must be > 0.")
        need(
            self.unfreeze_blocks is None or (is_int(self.unfreeze_blocks) and self.unfreeze_blocks >= -1),
            f"unfreeze_blocks must be -1 (all) or a whole number >= 0, got {self.unfreeze_blocks!r}.",
        )
        need(
            isinstance(self.optimizer, str) and self.optimizer.lower() in OPTIMIZER_NAMES,
            f"Unknown optimizer {self.optimizer!r}; valid optimizers are {', '.join(OPTIMIZER_NAMES)}.",
        )
        for name in ("head_lr", "finetune_lr", "backbone_lr_mult"):
            value = getattr(self, name)
            need(is_num(value) and value > 0, f"{name} must be a positive number, got {value!r}.")
        need(is_num(self.weight_decay) and self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay!r}.")
        need(
            self.schedule in SCHEDULES,
            f"Unknown schedule {self.schedule!r}; valid schedules are {', '.join(SCHEDULES)}.",
        )
        need(
            is_num(self.label_smoothing) and 0.0 <= self.label_smoothing < 1.0,
            f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}.",
        )
        need(is_int(self.batch_size) and self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size!r}.")
        need(
            self.augmentation in AUGMENTATIONS,
            f"Unknown augmentation {self.augmentation!r}; valid presets are {', '.join(AUGMENTATIONS)}.",
        )
        need(
            is_int(self.feature_views) and 0 <= self.feature_views <= 16,
            f"feature_views must be between 0 and 16, got {self.feature_views!r}.",
        )
        need(
            is_num(self.head_dropout) and 0.0 <= self.head_dropout < 1.0,
            f"head_dropout must be in [0, 1), got {self.head_dropout!r}.",
        )
        need(
            is_int(self.early_stopping_patience) and self.early_stopping_patience >= 0,
            f"early_stopping_patience must be >= 0 (0 = off), got {self.early_stopping_patience!r}.",
        )
        need(is_int(self.seed) and self.seed >= 0, f"seed must be a whole number >= 0, got {self.seed!r}.")
        need(self.device in DEVICES, f"Unknown device {self.device!r}; valid devices are {', '.join(DEVICES)}.")
        need(is_int(self.num_workers) and self.num_workers >= -1, f"num_workers must be >= -1 (auto), got {self.num_workers!r}.")
        return self


def recipe_lrs(optimizer: str) -> tuple[float, float]:
    """(head_lr, finetune_lr) of the default recipe for ``optimizer``.

    The recipe's rates are tuned for its default optimizer; other optimizers get them scaled by
    the ratio of their default learning rates in ``training.optim.OPTIMIZERS``.
    """
    from training.optim import OPTIMIZERS

    defaults = TrainConfig(data_dir=".")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {optimizer!r}; valid optimizers are {', '.join(OPTIMIZERS)}.")
    scale = OPTIMIZERS[optimizer].default_lr / OPTIMIZERS[defaults.optimizer].default_lr
    return defaults.head_lr * scale, defaults.finetune_lr * scale
