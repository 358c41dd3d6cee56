"""Run configuration: one frozen dataclass, JSON-safe, validated with one clear sentence.

The defaults are the recipe measured in ``bench/RESULTS.md``: the network chosen to fit the budget
(``backbone="auto"``: the strongest EfficientNet-Lite whose pass over the photos fits, Lite0 when
the pretrained network knows every class; the CLI, the run form and the API share it); a 5-minute
budget; the head solved to convergence on cached features (L-BFGS, regularisation chosen on the
validation split, started from the pretrained ImageNet rows where class names match); then the
last two stages unfrozen and fine-tuned on cached, augmented outputs of the frozen part, with a
warm-up and a cosine schedule. ``None`` in ``finetune_epochs`` and 0 in ``feature_views`` mean
"planned to fit the budget" (``training.plan``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from training.errors import ConfigError

SCHEDULES = ("constant", "cosine", "onecycle")
HEAD_SOLVERS = ("lbfgs", "epochs")
AUGMENTATIONS = ("none", "light", "standard")
DEVICES = ("auto", "cpu", "cuda")
# Known optimizer names (training.optim owns the table; this list only guards validate()).
OPTIMIZER_NAMES = ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw")

PATH_FIELDS = ("data_dir", "val_dir", "test_dir", "split_file", "backbone_weights")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a fine-tuning run depends on. ``to_dict``/``from_dict`` round-trip through JSON."""

    data_dir: str
    val_dir: str | None = None
    test_dir: str | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_file: str | None = None
    # A registry name, or "auto" (training.backbones.AUTO_BACKBONE): chosen once the photos are
    # counted, recorded in meta.json's backbone and backbone_choice.
    backbone: str = "auto"
    backbone_weights: str | None = None
    image_size: int | None = None
    # Time budget in minutes for the whole run (decoding, feature pass, both phases, test);
    # 0 = none (the plan's defaults or the epochs given).
    budget_minutes: float = 5.0
    # Phases: the frozen "head" phase, then the "finetune" phase with the last blocks unfrozen.
    # The head is solved with L-BFGS ("lbfgs", head_epochs unused) or trained for head_epochs
    # epochs with the chosen optimizer ("epochs", the lecture's way).
    head_solver: str = "lbfgs"
    head_epochs: int = 3
    finetune_epochs: int | None = None
    unfreeze_blocks: int | None = 2
    optimizer: str = "adamw"
    head_lr: float = 1e-3
    # Chosen on validation with bench/finetune_variants.py (Lite2, last two stages, 10 epochs):
    # 1e-3 against 3e-4 gave validation 95.8% against 95.0% on dogs-20 without head init and a
    # lower validation loss at the same 100% on flowers-12 (bench/RESULTS.md, "fine-tune variants").
    finetune_lr: float = 1e-3
    backbone_lr_mult: float = 1.0
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    # Mixup in the fine-tune phase: Beta(α, α) weights, 0 = off (on cached views: manifold mixup).
    mixup: float = 0.0
    batch_size: int = 32
    augmentation: str = "standard"
    # Keep BatchNorm statistics fixed in the unfrozen stages too (small datasets: 30-40 photos
    # per class give noisy batch statistics); the affine BatchNorm weights still train.
    freeze_batchnorm: bool = True
    # Cached frozen-part outputs: how many views of each training image to cache (the first one is
    # the plain evaluation view); every epoch draws one of them per image. 0 = planned to fit
    # the budget (1 without augmentation).
    feature_views: int = 0
    cache_features: bool = True
    head_dropout: float = 0.0
    early_stopping_patience: int = 0
    seed: int = 0
    device: str = "auto"
    num_workers: int = -1
    init_head_from_pretrained: bool = True

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (paths as strings)."""
        out = dataclasses.asdict(self)
        for name in PATH_FIELDS:
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
        for name in PATH_FIELDS:
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
    def budget_seconds(self) -> float | None:
        return self.budget_minutes * 60.0 if self.budget_minutes else None

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
            is_num(self.test_fraction) and 0.0 <= self.test_fraction < 1.0 and self.val_fraction + self.test_fraction < 1.0,
            f"test_fraction must be in [0, 1) and leave photos for training, got {self.test_fraction!r}.",
        )
        need(
            not (self.val_dir and self.split_file),
            "Give either val_dir or split_file, not both.",
        )
        need(not self.test_dir or bool(self.val_dir), "test_dir needs val_dir too (or use a split file).")
        need(
            is_num(self.budget_minutes) and 0 <= self.budget_minutes <= 24 * 60,
            f"budget_minutes must be between 0 (no budget) and 1440, got {self.budget_minutes!r}.",
        )
        need(
            self.head_solver in HEAD_SOLVERS,
            f"Unknown head_solver {self.head_solver!r}; valid solvers are {', '.join(HEAD_SOLVERS)}.",
        )
        need(is_num(self.warmup_epochs) and self.warmup_epochs >= 0, f"warmup_epochs must be >= 0, got {self.warmup_epochs!r}.")
        need(isinstance(self.backbone, str) and self.backbone != "", "backbone must be a name.")
        need(
            self.image_size is None or (is_int(self.image_size) and 16 <= self.image_size <= 1024),
            f"image_size must be an integer between 16 and 1024, got {self.image_size!r}.",
        )
        need(is_int(self.head_epochs) and self.head_epochs >= 0, f"head_epochs must be a whole number >= 0, got {self.head_epochs!r}.")
        need(
            self.finetune_epochs is None or (is_int(self.finetune_epochs) and self.finetune_epochs >= 0),
            f"finetune_epochs must be a whole number >= 0 (or empty: planned), got {self.finetune_epochs!r}.",
        )
        need(
            self.head_solver == "lbfgs" or self.head_epochs > 0 or self.finetune_epochs != 0,
            "At least one of head_epochs and finetune_epochs must be > 0.",
        )
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
        need(is_num(self.mixup) and 0.0 <= self.mixup <= 10.0, f"mixup must be between 0 (off) and 10, got {self.mixup!r}.")
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

    Each optimizer's own tuned rates where ``training.optim.OPTIMIZERS`` records them
    (bench/optimizers.py); otherwise the default optimizer's scaled by the ratio of the default
    learning rates.
    """
    from training.optim import OPTIMIZERS

    defaults = TrainConfig(data_dir=".")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"Unknown optimizer {optimizer!r}; valid optimizers are {', '.join(OPTIMIZERS)}.")
    if optimizer != defaults.optimizer and OPTIMIZERS[optimizer].recipe_lrs is not None:
        return OPTIMIZERS[optimizer].recipe_lrs
    scale = OPTIMIZERS[optimizer].default_lr / OPTIMIZERS[defaults.optimizer].default_lr
    return defaults.head_lr * scale, defaults.finetune_lr * scale
