"""The "start a fine-tuning run" form. The `finetune` management command fills the same form.

Imports classifier.datasets.selectors, classifier.models, classifier.runs.config, training.config,
training.optim (besides Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from classifier.datasets.selectors import dataset_blocking_reason
from classifier.models import Dataset
from classifier.runs import config as runconfig
from classifier.runs.display import CHOICE_WORDS
from training.config import AUGMENTATIONS, HEAD_SOLVERS, SCHEDULES
from training.optim import OPTIMIZERS

# Optimizer titles as the page shows them (training/ never imports Django, so it keeps English).
OPTIMIZER_TITLES = {
    "sgd": _("SGD: plain steps down the gradient"),
    "momentum": _("SGD with momentum"),
    "adagrad": _("AdaGrad: per-weight steps that shrink over time"),
    "rmsprop": _("RMSProp: per-weight steps from recent gradients"),
    "adam": _("Adam: momentum and per-weight steps"),
    "adamw": _("AdamW: Adam with weight decay kept apart from the gradient"),
}
# Backbone titles in people's words (training/ keeps its own English titles); "auto" comes first.
BACKBONE_TITLES = {
    runconfig.AUTO_BACKBONE: _("Automatic: the strongest EfficientNet-Lite that fits the time budget"),
    "efficientnet_lite0": _("EfficientNet-Lite0 (ImageNet, 224 px, fast)"),
    "efficientnet_lite1": _("EfficientNet-Lite1 (ImageNet, 240 px)"),
    "efficientnet_lite2": _("EfficientNet-Lite2 (ImageNet, 260 px, most accurate)"),
    "cifar100_mobilenetv2_x0_5": _("MobileNetV2 x0.5 (CIFAR-100, 32 px, the course's small model)"),
    "cifar10_resnet20": _("ResNet-20 (CIFAR-10, 32 px, knows “cat” and “dog”)"),
    "resnet18": _("ResNet-18 (ImageNet)"),
    "mobilenet_v3_large": _("MobileNetV3-Large (ImageNet)"),
    "efficientnet_b0": _("EfficientNet-B0 (ImageNet)"),
}

# Form field -> run configuration key, in the order the form shows them.
CONFIG_FIELDS = (
    "backbone",
    "optimizer",
    "budget_minutes",
    "head_solver",
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
    "mixup",
    "head_dropout",
)
ADVANCED_FIELDS = ("schedule", "weight_decay", "backbone_lr_mult", "label_smoothing", "mixup", "head_dropout")


def backbone_field_choices() -> list[tuple[str, str]]:
    """``auto`` first (the default), then every registered network; those without weights say so."""
    titles = {info.name: info.title for info in runconfig.backbone_choices()}
    choices = []
    for name, ready in runconfig.backbones_ready().items():
        title = BACKBONE_TITLES.get(name, titles.get(name, name))
        if ready:
            choices.append((name, str(title)))
        else:
            missing = _("not installed on this server")  # outside the f-string, where makemessages finds it
            choices.append((name, f"{title} · {missing}"))
    return choices


MISSING_WEIGHTS_SENTENCE = _(
    "This network's pretrained weights are not installed on this server. An administrator can "
    "download them once on a machine with internet access and copy them into the server's weights folder."
)


class BackboneSelect(forms.Select):
    """Backbones whose weights are missing are listed but cannot be chosen."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.missing: set[str] = set()

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex=subindex, attrs=attrs)
        if value in self.missing:
            option["attrs"]["disabled"] = True
        return option


class TypedFloatInput(forms.NumberInput):
    """Shows a number as a person types it: 5.0 -> "5", 0.0029999999999999996 -> "0.003"."""

    def format_value(self, value):
        if isinstance(value, float):
            return f"{value:.12g}"
        return super().format_value(value)


class TypedFloatField(forms.FloatField):
    widget = TypedFloatInput


class DatasetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Dataset) -> str:
        blocked = " ⚠" if obj.problems else ""
        classes = ngettext("%(n)d class", "%(n)d classes", obj.class_count) % {"n": obj.class_count}
        images = ngettext("%(n)d image", "%(n)d images", obj.image_count) % {"n": obj.image_count}
        return f"{obj} · {classes} · {images}{blocked}"


class RunForm(forms.Form):
    dataset = DatasetChoiceField(
        label=_("Dataset"), queryset=Dataset.objects.filter(status=Dataset.Status.READY).order_by("name", "-version")
    )
    backbone = forms.ChoiceField(
        label=_("Pretrained network"), widget=BackboneSelect,
        help_text=_("The network the model starts from. Automatic: the run times EfficientNet-Lite2, Lite1 and Lite0 and "
                    "takes the strongest whose pass over the photos fits half the time budget; when the pretrained "
                    "network already knows every class it tries Lite2 at 300 px first."),
    )
    optimizer = forms.ChoiceField(
        label=_("Optimizer"),
        choices=[
            (name, OPTIMIZER_TITLES.get(name, spec.title)) for name, spec in OPTIMIZERS.items()
        ],
        help_text=_("Choosing one fills in the recipe's learning rates for it, unless you typed your own."),
    )
    budget_minutes = TypedFloatField(
        label=_("Time budget (minutes)"), min_value=0, max_value=1440,
        help_text=_("The run plans its augmented views and fine-tune epochs to finish within it; 0: no budget."),
    )
    head_solver = forms.ChoiceField(
        label=_("How the new head learns"), choices=[(h, CHOICE_WORDS["head_solver"].get(h, h)) for h in HEAD_SOLVERS],
        help_text=_("Solved exactly on the frozen features in seconds, or trained for the head epochs with the optimizer."),
    )
    head_epochs = forms.IntegerField(
        label=_("Head epochs (backbone frozen)"), min_value=0, max_value=1000,
        help_text=_("Used when the head is trained for epochs."),
    )
    head_lr = TypedFloatField(label=_("Head learning rate"), min_value=1e-8, max_value=10.0)
    finetune_epochs = forms.IntegerField(
        label=_("Fine-tune epochs (last blocks unfrozen)"), min_value=0, max_value=1000, required=False,
        help_text=_("Empty: as many as fit the time budget."),
    )
    finetune_lr = TypedFloatField(label=_("Fine-tune learning rate"), min_value=1e-8, max_value=10.0)
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
    augmentation = forms.ChoiceField(
        label=_("Augmentation"), choices=[(a, CHOICE_WORDS["augmentation"].get(a, a)) for a in AUGMENTATIONS],
        help_text=_("Random crops, flips and colour changes of the training photos."),
    )
    early_stopping_patience = forms.IntegerField(
        label=_("Early stopping patience (epochs)"), min_value=0, max_value=1000, help_text=_("0 turns it off.")
    )
    seed = forms.IntegerField(
        label=_("Random seed"), min_value=0, max_value=2**31 - 1,
        help_text=_("The same seed repeats the same shuffles and augmentations."),
    )
    schedule = forms.ChoiceField(
        label=_("Learning-rate schedule"), choices=[(s, CHOICE_WORDS["schedule"].get(s, s)) for s in SCHEDULES]
    )
    weight_decay = TypedFloatField(label=_("Weight decay"), min_value=0.0, max_value=1.0)
    backbone_lr_mult = TypedFloatField(
        label=_("Backbone learning-rate multiplier"), min_value=1e-6, max_value=10.0,
        help_text=_("Unfrozen backbone blocks learn at this fraction of the fine-tune rate."),
    )
    label_smoothing = TypedFloatField(label=_("Label smoothing"), min_value=0.0, max_value=0.99)
    mixup = TypedFloatField(
        label=_("Mixup"), min_value=0.0, max_value=10.0,
        help_text=_("Fine-tuning learns from pairs of photos blended together; 0: off."),
    )
    head_dropout = TypedFloatField(label=_("Head dropout"), min_value=0.0, max_value=0.99)
    promote_when_done = forms.BooleanField(
        label=_("Promote when done if better than the active model"), required=False
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["backbone"].choices = backbone_field_choices()
        defaults = runconfig.default_config()
        for name in CONFIG_FIELDS:
            self.fields[name].initial = defaults[name]
        self.weights = runconfig.backbones_ready()
        self.fields["backbone"].widget.missing = {name for name, ready in self.weights.items() if not ready}
        self.missing_weights_note = MISSING_WEIGHTS_SENTENCE if self.fields["backbone"].widget.missing else None

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
        if not self.weights.get(name, True):
            raise forms.ValidationError(MISSING_WEIGHTS_SENTENCE)
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
