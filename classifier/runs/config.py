"""A run's configuration on the Django side: what users may set, its defaults, its validation.

A TrainingRun stores the complete ``training.config.TrainConfig`` minus the machine-specific
paths (data_dir, val_dir, split_file, backbone_weights): the worker fills those in from the
dataset row and the run's folder. Defaults are TrainConfig's (the benchmarked recipe); an
optimizer chosen without learning rates gets the recipe's rates scaled for that optimizer.
``backbone`` is a registry name or ``auto`` (the default): the worker's run picks the network and
its results name it (``result["metrics"]["backbone"]``); the stored config keeps ``auto``.

Imports training.backbones, training.config, training.errors, training.optim (besides Django and
libraries); never another domain's views or api.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.conf import settings

from training.backbones import (
    AUTO_BACKBONE,
    AUTO_CANDIDATES,
    KNOWN_PHOTOS_SIZES,
    BackboneInfo,
    check_backbone,
    get_backbone,
    list_backbones,
)
from training.config import TrainConfig, recipe_lrs
from training.errors import ConfigError
from training.optim import OPTIMIZERS

# Filled in by the worker, never by users: a run must not read or write arbitrary paths.
MACHINE_FIELDS = ("data_dir", "val_dir", "test_dir", "split_file", "backbone_weights")
# The dataset's stored split decides which images validate, so every run of a dataset compares.
DATASET_FIELDS = ("val_fraction", "test_fraction")
RUN_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in MACHINE_FIELDS + DATASET_FIELDS
)
_PLACEHOLDER_DIR = "."


class RunConfigError(ValueError):
    """An invalid run configuration; ``field`` names the offending key when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def default_config(optimizer: str | None = None) -> dict[str, Any]:
    """TrainConfig's defaults for every user-settable field (the recipe's rates for ``optimizer``)."""
    defaults = TrainConfig(data_dir=_PLACEHOLDER_DIR).to_dict()
    out = {name: defaults[name] for name in RUN_FIELDS}
    if optimizer and optimizer != out["optimizer"]:
        out["optimizer"] = optimizer
        out["head_lr"], out["finetune_lr"] = (tidy_number(rate) for rate in recipe_lrs(optimizer))
    return out


def tidy_number(value: float) -> float:
    """A float as a person would type it: 0.0029999999999999996 (a product of floats) -> 0.003.

    Twelve significant digits keep every rate a user can mean and drop the binary noise, so the
    stored, compared and shown value is the one the form offered.
    """
    return float(f"{float(value):.12g}")


def _field_of(message: str) -> str | None:
    for name in sorted(RUN_FIELDS, key=len, reverse=True):
        if message.startswith(f"{name} "):
            return name
    lowered = message.lower()
    for name in ("optimizer", "schedule", "augmentation", "device", "backbone"):
        if f"unknown {name}" in lowered:
            return name
    return None


def build_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """A complete, validated run configuration from ``data`` (missing keys get the defaults).

    Raises RunConfigError for unknown keys, machine paths, unknown backbones/optimizers and every
    value TrainConfig.validate() refuses.
    """
    if not isinstance(data, Mapping):
        raise RunConfigError("The configuration must be a JSON object.")
    forbidden = sorted(set(data) & set(MACHINE_FIELDS))
    if forbidden:
        raise RunConfigError(
            f"{', '.join(forbidden)} cannot be set: the dataset and the run's folder decide the paths.", forbidden[0]
        )
    fixed = sorted(set(data) & set(DATASET_FIELDS))
    if fixed:
        raise RunConfigError(f"{fixed[0]} cannot be set: the dataset's stored train/validation/test split is used.", fixed[0])
    unknown = sorted(set(data) - set(RUN_FIELDS))
    if unknown:
        raise RunConfigError(
            f"Unknown configuration key(s): {', '.join(unknown)}; valid keys are {', '.join(RUN_FIELDS)}.", unknown[0]
        )
    optimizer = data.get("optimizer")
    if optimizer is not None and (not isinstance(optimizer, str) or optimizer not in OPTIMIZERS):
        raise RunConfigError(f"Unknown optimizer {optimizer!r}; valid optimizers are {', '.join(OPTIMIZERS)}.", "optimizer")
    config = default_config(optimizer if "head_lr" not in data and "finetune_lr" not in data else None)
    config.update(data)
    if not isinstance(config["backbone"], str):
        raise RunConfigError("backbone must be a name.", "backbone")
    try:
        check_backbone(config["backbone"])
        TrainConfig.from_dict({**config, "data_dir": _PLACEHOLDER_DIR}).validate()
    except ConfigError as exc:
        raise RunConfigError(str(exc), _field_of(str(exc))) from None
    if not isinstance(config["cache_features"], bool) or not isinstance(config["init_head_from_pretrained"], bool):
        raise RunConfigError("cache_features and init_head_from_pretrained must be true or false.")
    return config


def train_config(config: Mapping[str, Any], *, data_dir: Path, split_file: Path | None) -> TrainConfig:
    """The TrainConfig a worker runs: the stored config plus this machine's paths."""
    return TrainConfig.from_dict(
        {**{k: v for k, v in config.items() if k in RUN_FIELDS}, "data_dir": str(data_dir),
         "split_file": str(split_file) if split_file else None}
    ).validate()


def time_limit_seconds(config: Mapping[str, Any], *, image_count: int) -> int:
    """A generous wall-clock limit for one attempt of a run, bounded by BREEDLAB_MAX_RUN_SECONDS.

    Ten minutes for start-up (weights, decoding, feature caches) plus, per image and epoch, a
    budget that assumes a slow CPU: 0.05 s in the cached head phase and 1 s in the fine-tune
    phase at 224 px (scaled with the pixel count). ``auto`` counts its largest candidate's size
    (``KNOWN_PHOTOS_SIZES`` included).
    """
    backbone = str(config.get("backbone") or TrainConfig.backbone)
    names = AUTO_CANDIDATES if backbone == AUTO_BACKBONE else (backbone,)
    try:
        size = config.get("image_size") or max(
            max(get_backbone(name).input_size, KNOWN_PHOTOS_SIZES.get(name, 0)) for name in names
        )
    except ConfigError:
        size = 224
    pixels = (float(size) / 224.0) ** 2
    images = max(int(image_count), 1)
    head = int(config.get("head_epochs") or 0) * images * 0.05 * pixels
    tune = int(config.get("finetune_epochs") or 0) * images * 1.0 * pixels
    estimate = 600 + head + tune + images * 0.2  # decoding and the final evaluation
    budget = float(config.get("budget_minutes") or 0) * 60
    if budget:
        estimate = max(estimate, 600 + 3 * budget)  # a planned run: its budget, with room for a slow start
    return int(min(settings.BREEDLAB_MAX_RUN_SECONDS, max(600, math.ceil(estimate))))


_BACKBONES: tuple[float, list[BackboneInfo]] | None = None
_BACKBONES_TTL = 300.0


def backbone_choices() -> list[BackboneInfo]:
    """``training.backbones.list_backbones()``, cached for five minutes (it probes for weights)."""
    global _BACKBONES
    now = time.monotonic()
    if _BACKBONES is None or now - _BACKBONES[0] > _BACKBONES_TTL:
        _BACKBONES = (now, list_backbones())
    return _BACKBONES[1]


def backbones_ready() -> dict[str, bool]:
    """Every choice of the backbone field, ``auto`` first, and whether it can run here (its pretrained
    weights are present; ``auto``: those of at least one of its candidates)."""
    infos = backbone_choices()
    auto = any(info.weights_available for info in infos if info.name in AUTO_CANDIDATES)
    return {AUTO_BACKBONE: auto, **{info.name: info.weights_available for info in infos}}
