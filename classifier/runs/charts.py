"""Charts drawn by matplotlib (Agg, object API, no pyplot state) as SVG text.

- ``curves_svg``: loss and accuracy per epoch, train and validation, the freeze -> unfreeze
  switch marked;
- ``compare_svg``: several runs' curves overlaid;
- ``confusion_svg``: a confusion matrix whose cells are links (matplotlib writes ``<a>`` around
  artists with a URL), meant to be inlined in the page;
- ``cached_svg``: any of them drawn once per run (or compared id set) and content, then served
  from the shared cache.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
from django.core.cache import cache
from django.utils import translation

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

_RC = {
    "svg.fonttype": "none",  # text stays text: smaller files, the page's font, searchable
    "svg.hashsalt": "breedlab",  # stable element ids
    # Class and run names come from users: drawn as plain text, never as mathtext ($...$) or TeX.
    "text.parse_math": False,
    "text.usetex": False,
    "font.size": 11,
    "axes.titlesize": 12,
    "legend.fontsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
TRAIN_COLOR, VAL_COLOR, SWITCH_COLOR = "#1565c0", "#b3541e", "#5f6b73"
PALETTE = ["#b3541e", "#1565c0", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#ef6c00", "#4e342e", "#ad1457", "#37474f"]


# Two panels one above the other for a phone's width: drawn at about the size it is shown
# (a 10-inch-wide chart squeezed into 350 px has 4-px letters).
STACKED_SIZE = (4.6, 6.4)
CACHE_SECONDS = 7 * 86400
CHART_VERSION = 4  # bump when the drawing changes: every cached chart is redrawn


def cached_svg(kind: str, owner: str, data: Any, draw: Callable[[], str]) -> str:
    """``draw()``'s SVG, drawn once per (chart kind, owner, language, data) and then served from the
    shared cache. ``owner`` is the run id (or the id set of a comparison); ``data`` is what the
    chart shows (epochs, the confusion matrix), so a run that changes gets a new key at once and
    an unchanged one is never redrawn."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]
    key = f"chart:{CHART_VERSION}:{kind}:{owner}:{translation.get_language() or ''}:{digest}"
    svg = cache.get(key)
    if svg is None:
        svg = draw()
        cache.set(key, svg, CACHE_SECONDS)
    return svg


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", transparent=True)
    text = buf.getvalue()
    # Inline-ready: drop the XML prolog and doctype, keep the <svg> element; no RDF metadata
    # (its "image/svg+xml" and "Matplotlib v..." would be text nodes of the page).
    text = text[text.index("<svg") :]
    return re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)


def _short(name: str, limit: int = 40) -> str:
    """One line of at most ``limit`` characters (a 200-character class name must not squeeze the chart away)."""
    name = " ".join(str(name).split())
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _series(epochs: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for i, e in enumerate(epochs, start=1):
        value = e.get(key)
        if value is not None:
            xs.append(i)
            ys.append(float(value))
    return xs, ys


def accuracy_floor(values: Sequence[float]) -> float:
    """The accuracy axis' lower end in %: 10 points under the lowest value, rounded down to 10."""
    if not values:
        return 0.0
    return max(0.0, math.floor((min(values) - 10.0) / 10.0) * 10.0)


def _phase_bands(ax, epochs: Sequence[dict[str, Any]], labels: dict[str, str]) -> None:
    """Name each phase's epochs over the plot ("new head", "fine-tuning"), the fine-tune shaded."""
    start = 0
    for i in range(1, len(epochs) + 1):
        if i == len(epochs) or epochs[i].get("phase") != epochs[start].get("phase"):
            phase = epochs[start].get("phase")
            left, right = start + 0.5, i + 0.5
            if phase == "finetune":
                ax.axvspan(left, right, color=SWITCH_COLOR, alpha=0.07, linewidth=0)
            name = labels.get(phase or "", phase or "")
            if name:
                ax.text((left + right) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                        fontsize=9, color=SWITCH_COLOR, clip_on=False)
            start = i


def switch_index(epochs: Sequence[dict[str, Any]]) -> int | None:
    """1-based position of the first fine-tune epoch that follows a head epoch (the unfreeze)."""
    for i in range(1, len(epochs)):
        if epochs[i - 1].get("phase") == "head" and epochs[i].get("phase") == "finetune":
            return i + 1
    return None


def curves_svg(epochs: Sequence[dict[str, Any]], *, labels: dict[str, str], stacked: bool = False) -> str:
    """Two panels (loss, accuracy) for one run, side by side or, for a phone, one above the other.
    ``labels`` holds the translated texts: loss, accuracy, epoch, train, validation, unfreeze."""
    with matplotlib.rc_context(_RC):
        fig = _figure(*STACKED_SIZE) if stacked else _figure(10.0, 3.6)
        axes = fig.subplots(2, 1) if stacked else fig.subplots(1, 2)
        switch = switch_index(epochs)
        accuracies: list[float] = []
        for ax, (metric, title) in zip(axes, (("loss", labels["loss"]), ("acc", labels["accuracy"]))):
            for split, color, style in (("train", TRAIN_COLOR, "-"), ("val", VAL_COLOR, "--")):
                xs, ys = _series(epochs, f"{split}_{metric}")
                if metric == "acc":
                    ys = [y * 100 for y in ys]
                    accuracies.extend(ys)
                ax.plot(xs, ys, style, color=color, marker="o", markersize=4, linewidth=2,
                        label=labels["train"] if split == "train" else labels["validation"])
            if switch is not None:
                ax.axvline(switch - 0.5, color=SWITCH_COLOR, linestyle=":", linewidth=1.2)
                ax.annotate(labels["unfreeze"], xy=(switch - 0.5, 0), xycoords=("data", "axes fraction"),
                            xytext=(3, 4), textcoords="offset points", color=SWITCH_COLOR, fontsize=9)
            _phase_bands(ax, epochs, labels)
            ax.set_title(title, pad=18)
            ax.set_xlabel(labels["epoch"])
            if metric == "acc":
                ax.set_ylabel("%")
                if accuracies:
                    ax.set_ylim(accuracy_floor(accuracies), 100.5)
            if epochs:
                ax.set_xlim(0.5, len(epochs) + 0.5)
                ax.xaxis.get_major_locator().set_params(integer=True)
            ax.grid(alpha=0.25)
        axes[0].legend(loc="best", frameon=False)
        return _svg(fig)


def compare_svg(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], *, labels: dict[str, str], stacked: bool = False) -> str:
    """Validation loss and accuracy of several runs overlaid (train loss thin and dotted); the two
    panels side by side or, for a phone, one above the other."""
    with matplotlib.rc_context(_RC):
        fig = _figure(*STACKED_SIZE) if stacked else _figure(10.0, 3.8)
        ax_loss, ax_acc = fig.subplots(2, 1) if stacked else fig.subplots(1, 2)
        longest = 0
        accuracies: list[float] = []
        for k, (name, epochs) in enumerate(runs):
            color = PALETTE[k % len(PALETTE)]
            longest = max(longest, len(epochs))
            xs, ys = _series(epochs, "val_loss")
            ax_loss.plot(xs, ys, "-", color=color, marker="o", markersize=3.5, linewidth=2, label=name)
            xs, ys = _series(epochs, "train_loss")
            ax_loss.plot(xs, ys, ":", color=color, linewidth=1)
            xs, ys = _series(epochs, "val_acc")
            accuracies.extend(y * 100 for y in ys)
            ax_acc.plot(xs, [y * 100 for y in ys], "-", color=color, marker="o", markersize=3.5, linewidth=2, label=name)
            switch = switch_index(epochs)
            if switch is not None:
                for ax in (ax_loss, ax_acc):
                    ax.axvline(switch - 0.5, color=color, linestyle=":", linewidth=0.8, alpha=0.6)
        ax_loss.set_title(labels["loss"])
        ax_acc.set_title(labels["accuracy"])
        ax_acc.set_ylabel("%")
        if accuracies:
            ax_acc.set_ylim(accuracy_floor(accuracies), 100.5)
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel(labels["epoch"])
            ax.grid(alpha=0.25)
            if longest:
                ax.set_xlim(0.5, longest + 0.5)
                ax.xaxis.get_major_locator().set_params(integer=True)
        # Every panel has its legend: the runs' colours; on the loss panel also what the dotted lines are.
        from matplotlib.lines import Line2D

        handles, names = ax_loss.get_legend_handles_labels()
        handles.append(Line2D([], [], color=SWITCH_COLOR, linestyle=":", linewidth=1))
        names.append(labels.get("dotted_train", "train"))
        ax_loss.legend(handles, names, loc="best", frameon=False)
        ax_acc.legend(loc="best", frameon=False)
        return _svg(fig)


def confusion_svg(
    matrix: Sequence[Sequence[int]],
    class_names: Sequence[str],
    *,
    cell_url: Callable[[int, int], str],
    labels: dict[str, str],
) -> str:
    """Rows are true classes, columns predicted; every non-empty cell links to ``cell_url(i, j)``."""
    k = len(class_names)
    side = min(14.0, max(4.5, 0.4 * k + 2.2))
    font = 11 if k <= 10 else (9 if k <= 20 else (6 if k <= 50 else 4))
    peak = max([max(row) for row in matrix if row] + [1])
    with matplotlib.rc_context(_RC):
        fig = _figure(side, side)
        ax = fig.subplots()
        ax.imshow([[v / peak for v in row] for row in matrix], cmap="Oranges", vmin=0, vmax=1, aspect="equal")
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                if not value:
                    continue
                cell = Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="none", linewidth=0)
                cell.set_url(cell_url(i, j))
                ax.add_patch(cell)
                if k <= 40:
                    text = ax.text(j, i, str(value), ha="center", va="center", fontsize=font,
                                   color="white" if value / peak > 0.6 else "#1d2327")
                    text.set_url(cell_url(i, j))
        names = [_short(name) for name in class_names]
        ax.set_xticks(range(k), labels=names, rotation=90, fontsize=font)
        ax.set_yticks(range(k), labels=names, fontsize=font)
        ax.set_xlabel(labels["predicted"])
        ax.set_ylabel(labels["true"])
        ax.spines[:].set_visible(False)
        svg = _svg(fig)
    # Links open in the same tab, and the transparent cell rectangles still catch clicks.
    svg = svg.replace(' target="_blank"', "")
    return re.sub(r"(<a [^>]*>\s*<path )", r'\1pointer-events="all" ', svg)
