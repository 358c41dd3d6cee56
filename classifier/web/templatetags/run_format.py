"""Formatting for run pages: fractions as percentages, durations, ETAs, counted nouns.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import math
from datetime import timedelta

from django import template
from django.utils.formats import get_format, number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

register = template.Library()


def _finite(value) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN, infinite)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@register.filter
def pct(value, digits: int = 1) -> str:
    """0.875 -> "87.5%" ("87,5%" in Russian; "—" for nothing)."""
    number = _finite(value)
    if number is None:
        return "—"
    # The active language's decimal separator, like floatformat's numbers beside it ("87,5%").
    return f"{number * 100:.{int(digits)}f}".replace(".", get_format("DECIMAL_SEPARATOR")) + "%"


@register.filter
def short_number(value, digits: int = 3) -> str:
    """A rate with a few significant digits and the language's decimal separator: 0.0201 -> "0,0201"."""
    number = _finite(value)
    if number is None:
        return "—"
    return f"{number:.{int(digits)}g}".replace(".", get_format("DECIMAL_SEPARATOR"))


@register.filter
def points(value, digits: int = 1) -> str:
    """A difference of fractions in percentage points: 0.021 -> "+2.1 points" ("+2,1 п. п." in Russian)."""
    number = _finite(value)
    if number is None:
        return "—"
    text = f"{number * 100:+.{int(digits)}f}".replace(".", get_format("DECIMAL_SEPARATOR"))
    return _("%(n)s points") % {"n": text}


@register.filter
def seconds(value) -> str:
    """A number of seconds (or a timedelta) as "1 h 02 min", "3 min 05 s" or "12 s"."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    try:
        total = int(round(float(value)))
    except (TypeError, ValueError):
        return "—"
    if total < 0:
        return "—"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return _("%(h)d h %(m)02d min") % {"h": hours, "m": minutes}
    if minutes:
        return _("%(m)d min %(s)02d s") % {"m": minutes, "s": secs}
    return _("%(s)d s") % {"s": secs}


@register.filter
def plural_count(value) -> int:
    """The number that picks a noun's form: a whole number as it is; a fraction counts like 2.

    Both languages use the form of 2 for fractions ("1.5 hours", "1,5 часа"), and gettext's plural
    rules want an integer.
    """
    number = _finite(value)
    if number is None or number != int(number):
        return 2
    return abs(int(number))


# Nouns shown after a number: the forms for 1, 2 and 5 (Russian has three) through ngettext.
COUNTED = {
    "photo": lambda n: ngettext("%(n)s photo", "%(n)s photos", n),
    "breed": lambda n: ngettext("%(n)s breed", "%(n)s breeds", n),
    "epoch": lambda n: ngettext("%(n)s epoch", "%(n)s epochs", n),
}


@register.filter
def counted(value, noun: str) -> str:
    """A number with its noun in the right form: 1 -> "1 photo", 21 -> "21 фотография"."""
    text = number_format(value) if isinstance(value, int | float) else str(value)
    return COUNTED[noun](plural_count(value)) % {"n": text}


@register.filter
def get_item(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None
