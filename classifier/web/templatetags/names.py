"""Display names in templates: ``{{ "australian_terrier"|breed }}`` and ``{{ version.name|version_name }}``.

Imports classifier.web.names (Django and libraries besides).
"""

from __future__ import annotations

from django import template

from classifier.web.names import class_display_name, version_display_name

register = template.Library()


@register.filter
def breed(value) -> str:
    """A class folder name as people read it, in the active language ("Australian terrier")."""
    return class_display_name(value) if value not in (None, "") else ""


@register.filter
def version_name(value) -> str:
    """A stored version name as people read it ("Dogs 5 · v1 · run #3")."""
    return version_display_name(value) if value else ""
