"""A run's configuration in people's words: a label, a unit, a help text and a group per setting,
values shown as a person reads them, and the settings left at their default set apart.

The run page and the comparison page show ``config_groups(...)``; a key this table does not know
(a setting added to TrainConfig later) still shows, under its own name, in the last group.

Imports classifier.runs.config and classifier.web.templatetags.run_format (besides Django and libraries);
never another domain's views or api.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.formats import get_format, number_format
from django.utils.translation import gettext, gettext_lazy, npgettext
from django.utils.translation import gettext_lazy as _

from classifier.runs import config as runconfig
from classifier.web.templatetags.run_format import plural_count

GROUPS = {
    "data": gettext_lazy("Data"),
    "model": gettext_lazy("Model"),
    "phases": gettext_lazy("Phases"),
    "optimizer": gettext_lazy("Optimizer"),
    "machine": gettext_lazy("Machine"),
}


@dataclass(frozen=True)
class Setting:
    group: str
    label: Any
    unit: Any = ""  # a fixed text, or a function of the count for nouns ("1 epoch", "5 epochs")
    help: Any = ""


# Units that are nouns take the number's form ("1 epoch", "2 epochs"; "1 эпоха", "2 эпохи", "5 эпох").
def _photos(n: int) -> str:
    return npgettext("unit", "photo", "photos", n)


def _minutes(n: int) -> str:
    return npgettext("unit", "minute", "minutes", n)


def _epochs(n: int) -> str:
    return npgettext("unit", "epoch", "epochs", n)


def _blocks(n: int) -> str:
    return npgettext("unit", "block", "blocks", n)


def _epochs_without_progress(n: int) -> str:
    return npgettext("unit", "epoch without progress", "epochs without progress", n)


SETTINGS: dict[str, Setting] = {
    "image_size": Setting("data", _("Image size"), _("px"), _("Photos are resized to this square; empty: the backbone's own size.")),
    "augmentation": Setting("data", _("Augmentation"), "", _("Random crops, flips and colour changes of the training photos.")),
    "batch_size": Setting("data", _("Batch size"), _photos, _("Photos per training step.")),
    "feature_views": Setting("data", _("Augmented views cached"), _("per photo"), _("How many varied copies of each photo the frozen backbone sees; 0: as many as the time budget allows.")),
    "test_fraction": Setting("data", _("Test share"), "", _("Share of each class kept aside and scored once at the end.")),
    "cache_features": Setting("data", _("Remember the frozen backbone's outputs"), "", _("Computes them once, so the head trains in seconds.")),
    "backbone": Setting("model", _("Pretrained network"), "", _("The network the model starts from.")),
    "init_head_from_pretrained": Setting("model", _("Start the head from the pretrained classes"), "", _("Breeds the pretrained network already knows start from its own weights.")),
    "head_dropout": Setting("model", _("Head dropout"), "", _("Share of features dropped at random while training the head.")),
    "freeze_batchnorm": Setting("model", _("Keep normalisation statistics frozen"), "", _("The backbone's batch-norm statistics stay as pretrained.")),
    "budget_minutes": Setting("phases", _("Time budget"), _minutes, _("The run plans its views and epochs to finish within it; 0: no budget.")),
    "head_solver": Setting("phases", _("How the new head learns"), "", _("Solved exactly on the frozen features, or trained for epochs with the optimizer.")),
    "head_epochs": Setting("phases", _("Training the new head"), _epochs, _("Passes over the photos with the backbone frozen (when the head is trained for epochs).")),
    "finetune_epochs": Setting("phases", _("Fine-tuning"), _epochs, _("Passes over the photos with the last backbone blocks learning too; empty: as many as the time budget allows.")),
    "warmup_epochs": Setting("phases", _("Warm-up"), _epochs, _("The fine-tuning learning rate rises from zero over this many epochs.")),
    "unfreeze_blocks": Setting("phases", _("Backbone blocks that learn"), _blocks, _("-1: the whole backbone.")),
    "early_stopping_patience": Setting("phases", _("Stop early after"), _epochs_without_progress, _("0: never stop early.")),
    "optimizer": Setting("optimizer", _("Optimizer"), "", _("The rule that updates the weights.")),
    "head_lr": Setting("optimizer", _("Learning rate of the head"), "", _("Step size while the backbone is frozen.")),
    "finetune_lr": Setting("optimizer", _("Learning rate of fine-tuning"), "", _("Step size once backbone blocks learn.")),
    "backbone_lr_mult": Setting("optimizer", _("Backbone learning-rate share"), "", _("Backbone blocks learn at this fraction of the fine-tuning rate.")),
    "weight_decay": Setting("optimizer", _("Weight decay"), "", _("Pulls the weights towards zero a little every step.")),
    "schedule": Setting("optimizer", _("Learning-rate schedule"), "", _("How the learning rate changes over the epochs.")),
    "label_smoothing": Setting("optimizer", _("Label smoothing"), "", _("Keeps the model from being overconfident.")),
    "mixup": Setting("optimizer", _("Mixup"), "", _("Fine-tuning learns from pairs of photos blended together; 0: off.")),
    "seed": Setting("machine", _("Random seed"), "", _("The same seed repeats the same shuffles and augmentations.")),
    "device": Setting("machine", _("Device"), "", _("Where the run computes: automatic picks a GPU when there is one.")),
    "num_workers": Setting("machine", _("Photo-loading processes"), "", _("-1: as many as the machine suits.")),
}

# Networks and optimizers by their names (training/ and the configuration keep the keys).
BACKBONE_NAMES = {
    runconfig.AUTO_BACKBONE: gettext_lazy("Automatic"),
    "efficientnet_lite0": "EfficientNet-Lite0", "efficientnet_lite1": "EfficientNet-Lite1",
    "efficientnet_lite2": "EfficientNet-Lite2", "cifar100_mobilenetv2_x0_5": "MobileNetV2 x0.5 (CIFAR-100)",
    "cifar10_resnet20": "ResNet-20 (CIFAR-10)", "resnet18": "ResNet-18", "mobilenet_v3_large": "MobileNetV3-Large",
    "efficientnet_b0": "EfficientNet-B0",
}
OPTIMIZER_NAMES = {
    "sgd": "SGD", "momentum": gettext_lazy("SGD with momentum"), "adagrad": "AdaGrad", "rmsprop": "RMSProp",
    "adam": "Adam", "adamw": "AdamW",
}


def backbone_name(key: str) -> str:
    """ "cifar10_resnet20" -> "ResNet-20 (CIFAR-10)"; an unknown key as it is."""
    return str(BACKBONE_NAMES.get(key, key))


def backbone_text(configured: str, used: str | None = None) -> str:
    """A run's network: "EfficientNet-Lite2 (chosen automatically)" once an ``auto`` run's results
    name the network it used, "Automatic" before; a named network by its name."""
    if configured == runconfig.AUTO_BACKBONE and used and used != configured:
        return gettext("%(name)s (chosen automatically)") % {"name": backbone_name(used)}
    return backbone_name(used or configured)


def run_backbone_text(run: Any) -> str:
    """``backbone_text`` of a TrainingRun: its configured network and the one it used (``run.backbone``)."""
    return backbone_text(str(run.config.get("backbone", "")), run.backbone)


def optimizer_name(key: str) -> str:
    """ "adamw" -> "AdamW"; an unknown key as it is."""
    return str(OPTIMIZER_NAMES.get(key, key))


CHOICE_WORDS = {
    "backbone": BACKBONE_NAMES,
    "optimizer": OPTIMIZER_NAMES,
    "augmentation": {"none": gettext_lazy("none"), "light": gettext_lazy("light"), "standard": gettext_lazy("standard")},
    "schedule": {"constant": gettext_lazy("constant"), "cosine": gettext_lazy("cosine (slows down towards the end)"),
                 "onecycle": gettext_lazy("one cycle (up, then down)")},
    "head_solver": {"lbfgs": gettext_lazy("solved exactly (L-BFGS)"), "epochs": gettext_lazy("epochs with the optimizer")},
    "device": {"auto": gettext_lazy("automatic"), "cpu": gettext_lazy("processor (CPU)"), "cuda": gettext_lazy("graphics card (GPU)")},
}


def decimal_text(value: float) -> str:
    """0.0003 -> "0.0003" (English) or "0,0003" (Russian); never binary noise or a locale mix."""
    text = f"{runconfig.tidy_number(value):.6g}"
    return text.replace(".", get_format("DECIMAL_SEPARATOR"))


def value_text(key: str, value: Any) -> str:
    """One setting's value as a person reads it, in the active language."""
    if value is None:
        if key == "image_size":
            return gettext("the network's own")
        return "—"
    if isinstance(value, bool):
        return gettext("yes") if value else gettext("no")
    words = CHOICE_WORDS.get(key, {})
    if isinstance(value, str) and value in words:
        return str(words[value])
    if key == "num_workers" and value == -1:
        return gettext("automatic")
    if key == "unfreeze_blocks" and value == -1:
        return gettext("all")
    if isinstance(value, float):
        return decimal_text(value)
    if isinstance(value, int):
        return number_format(value)
    return str(value)


def unit_text(key: str, value: Any) -> str:
    """The unit shown after one setting's value ("" when there is none or the value is a word)."""
    unit = SETTINGS[key].unit if key in SETTINGS else ""
    if value is None or isinstance(value, bool | str) or (key in ("num_workers", "unfreeze_blocks") and value == -1):
        return ""
    return unit(plural_count(value)) if callable(unit) else str(unit)


def config_groups(
    configs: list[dict[str, Any]], *, backbones: list[str] | None = None, image_sizes: list[int | None] | None = None
) -> list[dict[str, Any]]:
    """Groups of rows for one or more configurations (one value column each).

    Each row: key, label, help, values (display strings), cells (each value with its unit, in the
    form its number takes), differs (the runs disagree) and default (every run has the default value: the page folds such rows behind "more").
    ``backbones``: per configuration, the network its run used (``TrainingRun.backbone``), so that
    an ``auto`` row names the chosen one; ``image_sizes`` likewise the input size it used
    (``TrainingRun.image_size``), shown where an ``auto`` run left the size to its choice.
    """
    defaults = runconfig.default_config()
    keys: list[str] = []
    for config in configs:
        keys.extend(k for k in config if k not in keys)
    grouped: dict[str, list[dict[str, Any]]] = {name: [] for name in GROUPS}
    order = list(SETTINGS)
    for key in sorted(keys, key=lambda k: order.index(k) if k in SETTINGS else len(order)):
        setting = SETTINGS.get(key, Setting("machine", key))
        raw = [config.get(key) for config in configs]
        texts = [value_text(key, v) for v in raw]
        if key == "backbone" and backbones:
            texts = [backbone_text(str(v), used) if isinstance(v, str) else text for v, used, text in zip(raw, backbones, texts)]
        units = [unit_text(key, v) for v in raw]
        if key == "image_size" and image_sizes:
            for i, (config, used) in enumerate(zip(configs, image_sizes)):
                if raw[i] is None and used and config.get("backbone") == runconfig.AUTO_BACKBONE:
                    texts[i], units[i] = gettext("%(size)s px, chosen automatically") % {"size": used}, ""
        grouped[setting.group].append(
            {
                "key": key,
                "label": str(setting.label),
                "help": str(setting.help),
                "values": texts,
                "cells": [{"text": text, "unit": unit} for text, unit in zip(texts, units)],
                "differs": len({repr(v) for v in raw}) > 1 or len(set(texts)) > 1,
                "default": key in defaults and all(v == defaults[key] for v in raw) and len(set(texts)) == 1,
            }
        )
    return [
        {"name": str(GROUPS[name]), "rows": rows, "changed": [r for r in rows if not r["default"]],
         "unchanged": [r for r in rows if r["default"]]}
        for name, rows in grouped.items()
        if rows
    ]
