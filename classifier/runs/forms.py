"""The "start a fine-tuning run" form. The `finetune` management command fills the same form.

Imports classifier.datasets.selectors, classifier.models, classifier.runs.config, training.config,
training.optim (besides Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from classifier.datasets.selectors import dataset_blocking_reason
from classifier.models import Dataset
from classifier.runs import config as runconfig
from training.config import AUGMENTATIONS, SCHEDULES
from training.optim import OPTIMIZERS

# Optimizer titles as the page shows them (training/ never imports Django, so it keeps English).
OPTIMIZER_TITLES = {"momentum": _("SGD with momentum"), "adamw": _("AdamW (decoupled weight decay)")}

# Form field -> run configuration key, in the order the form shows them.
CONFIG_FIELDS = (
    "backbone",
    "optimizer",
    "head_epochs",
    "head_lr",
    "finetune_epochs",
    "finetune_lr",
    "unfreeze_blocks",
    "batch_size",
    "image_size",
    "augmentation",
    "early_stopping_patience",
    "seed",
    "schedule",
    "weight_decay",
    "backbone_lr_mult",
    "label_smoothing",
    "head_dropout",
)
ADVANCED_FIELDS = ("schedule", "weight_decay", "backbone_lr_mult", "label_smoothing", "head_dropout")


def backbone_field_choices() -> list[tuple[str, str]]:
    choices = []
    for info in runconfig.backbone_choices():
        state = _("weights available") if info.weights_available else _("weights missing")
        choices.append((info.name, f"{info.title} · {state}"))
    return choices


class DatasetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Dataset) -> str:
        blocked = " ⚠" if obj.problems else ""
        return f"{obj} · {obj.class_count} {_('classes')} · {obj.image_count} {_('images')}{blocked}"


class RunForm(forms.Form):
    dataset = DatasetChoiceField(
        label=_("Dataset"), queryset=Dataset.objects.filter(status=Dataset.Status.READY).order_by("name", "-version")
    )
    backbone = forms.ChoiceField(label=_("Backbone"), help_text=_("The pretrained network to start from."))
    optimizer = forms.ChoiceField(
        label=_("Optimizer"),
        choices=[
            (name, format_lazy("{} — {}", OPTIMIZER_TITLES.get(name, spec.title), spec.formula))
            for name, spec in OPTIMIZERS.items()
        ],
        help_text=_("Choosing one fills in the recipe's learning rates for it, unless you typed your own."),
    )
    head_epochs = forms.IntegerField(label=_("Head epochs (backbone frozen)"), min_value=0, max_value=1000)
    head_lr = forms.FloatField(label=_("Head learning rate"), min_value=1e-8, max_value=10.0)
    finetune_epochs = forms.IntegerField(label=_("Fine-tune epochs (last blocks unfrozen)"), min_value=0, max_value=1000)
    finetune_lr = forms.FloatField(label=_("Fine-tune learning rate"), min_value=1e-8, max_value=10.0)
    unfreeze_blocks = forms.IntegerField(
        label=_("Blocks to unfreeze"), min_value=-1, max_value=100, help_text=_("-1 unfreezes the whole backbone.")
    )
    batch_size = forms.IntegerField(label=_("Batch size"), min_value=1, max_value=4096)
    image_size = forms.IntegerField(
        label=_("Image size (px)"),
        min_value=16,
        max_value=1024,
        required=False,
        help_text=_("Empty: the backbone's own input size."),
    )
    augmentation = forms.ChoiceField(label=_("Augmentation"), choices=[(a, a) for a in AUGMENTATIONS])
    early_stopping_patience = forms.IntegerField(
        label=_("Early stopping patience (epochs)"), min_value=0, max_value=1000, help_text=_("0 turns it off.")
    )
    seed = forms.IntegerField(label=_("Seed"), min_value=0, max_value=2**31 - 1)
    schedule = forms.ChoiceField(label=_("Learning-rate schedule"), choices=[(s, s) for s in SCHEDULES])
    weight_decay = forms.FloatField(label=_("Weight decay"), min_value=0.0, max_value=1.0)
    backbone_lr_mult = forms.FloatField(
        label=_("Backbone learning-rate multiplier"), min_value=1e-6, max_value=10.0,
        help_text=_("Unfrozen backbone blocks learn at this fraction of the fine-tune rate."),
    )
    label_smoothing = forms.FloatField(label=_("Label smoothing"), min_value=0.0, max_value=0.99)
    head_dropout = forms.FloatField(label=_("Head dropout"), min_value=0.0, max_value=0.99)
    promote_when_done = forms.BooleanField(
        label=_("Promote when done if better than the active model"), required=False
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["backbone"].choices = backbone_field_choices()
        defaults = runconfig.default_config()
        for name in CONFIG_FIELDS:
            self.fields[name].initial = defaults[name]
        self.weights = {info.name: info for info in runconfig.backbone_choices()}

    @staticmethod
    def initial_from_config(config: dict[str, Any]) -> dict[str, Any]:
        return {name: config[name] for name in CONFIG_FIELDS if name in config}

    @staticmethod
    def recipe_rates() -> dict[str, tuple[float, float]]:
        """Per optimizer, the recipe's (head_lr, finetune_lr): the page's script fills them in."""
        rates = {}
        for name in OPTIMIZERS:
            config = runconfig.default_config(name)
            rates[name] = (config["head_lr"], config["finetune_lr"])
        return rates

    def advanced_fields(self):
        return [self[name] for name in ADVANCED_FIELDS]

    def basic_fields(self):
        return [self[name] for name in CONFIG_FIELDS if name not in ADVANCED_FIELDS]

    def clean_dataset(self) -> Dataset:
        dataset = self.cleaned_data["dataset"]
        reason = dataset_blocking_reason(dataset)
        if reason:
            raise forms.ValidationError(reason)
        return dataset

    def clean_backbone(self) -> str:
        name = self.cleaned_data["backbone"]
        info = self.weights.get(name)
        if info is not None and not info.weights_available:
            raise forms.ValidationError(_("Pretrained weights for this backbone are missing: %(detail)s"),
                                        params={"detail": info.weights_detail})
        return name

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        data = {name: cleaned.get(name) for name in CONFIG_FIELDS}
        try:
            self.config = runconfig.build_config(data)
        except runconfig.RunConfigError as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, exc.message)
        return cleaned
