"""Display names in templates: ``{{ "australian_terrier"|breed }}``, ``{{ run|run_backbone }}`` and ``{{ version.name|version_name }}``.

Imports classifier.web.names and classifier.runs.display (Django and libraries besides).
"""

from __future__ import annotations

from django import template

from classifier.runs.display import backbone_name, optimizer_name, run_backbone_text
from classifier.web.names import class_display_name, version_display_name

register = template.Library()


@register.filter
def breed(value) -> str:
    """A class folder name as people read it, in the active language ("Australian terrier")."""
    return class_display_name(value) if value not in (None, "") else ""


@register.filter
def backbone(value) -> str:
    """A backbone key as its network's name ("cifar10_resnet20" -> "ResNet-20 (CIFAR-10)")."""
    return backbone_name(value) if value else ""


@register.filter
def run_backbone(run) -> str:
    """A run's network: its name, "Automatic" while an ``auto`` run has not chosen, then
    "EfficientNet-Lite2 (chosen automatically)"."""
    return run_backbone_text(run) if run else ""


@register.filter
def optimizer(value) -> str:
    """An optimizer key as its name ("adamw" -> "AdamW")."""
    return optimizer_name(value) if value else ""


@register.filter
def version_name(value) -> str:
    """A stored version name as people read it ("Dogs 5 · v1 · run #3")."""
    return version_display_name(value) if value else ""
