"""Server-side charts of a dataset report, drawn with matplotlib (Agg, no pyplot state) as SVG.

Text is drawn as paths (matplotlib's default ``svg.fonttype``), so class names from users never
reach the SVG as markup; pages embed the chart with ``<img>``, which never runs scripts anyway.

Imports classifier.web.names (breeds' display names in the active language) besides libraries.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from classifier.web.names import class_display_name  # noqa: E402

TRAIN_COLOUR = "#b3541e"
VAL_COLOUR = "#e8a27c"


# Class names come from users: drawn as plain text, never as mathtext ($...$) or TeX.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def class_counts_svg(
    classes: list[dict], split: dict, labels: dict[str, str] | None = None, *, narrow: bool = False
) -> bytes:
    """Horizontal stacked bars: usable images per class, split into train and validation.

    ``classes`` is ``report["classes"]`` ([{"name", "images", ...}]); ``split`` the stored split;
    ``labels`` the translated "train", "validation" and "images" (English by default); ``narrow``
    draws it for a phone's width (about the size it is shown, so its letters stay readable).
    """
    with matplotlib.rc_context(PLAIN_TEXT):
        return _class_counts_svg(classes, split, labels, narrow)


def _class_counts_svg(classes: list[dict], split: dict, labels: dict[str, str] | None, narrow: bool) -> bytes:
    words = {"train": "train", "validation": "validation", "images": "images", **(labels or {})}
    names = [item["name"] for item in classes]
    val_counts = dict.fromkeys(names, 0)
    for rel in split.get("val", []):
        class_name = rel.split("/", 1)[0]
        if class_name in val_counts:
            val_counts[class_name] += 1
    totals = [int(item["images"]) for item in classes]
    val = [min(val_counts[name], total) for name, total in zip(names, totals)]
    train = [total - v for total, v in zip(totals, val)]

    height = max(2.0, 0.3 * len(names) + 1.1)
    figure = Figure(figsize=(3.9 if narrow else 8.0, height), dpi=100)
    axes = figure.add_subplot()
    positions = list(range(len(names)))
    axes.barh(positions, train, color=TRAIN_COLOUR, label=words["train"])
    axes.barh(positions, val, left=train, color=VAL_COLOUR, label=words["validation"])
    for y, total in zip(positions, totals):
        axes.text(total, y, f" {total}", va="center", ha="left", fontsize=10, color="#444444")
    limit = 18 if narrow else 28
    axes.set_yticks(positions, labels=[_short(class_display_name(name), limit) for name in names], fontsize=10)
    axes.invert_yaxis()
    axes.set_xlabel(words["images"], fontsize=10)
    axes.tick_params(axis="x", labelsize=10)
    axes.set_xlim(0, max(totals or [1]) * 1.12 + 1)
    axes.spines[["top", "right"]].set_visible(False)
    if names:
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, fontsize=10, frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")  # the legend above included
    return buffer.getvalue()


def _short(name: str, limit: int = 28) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
