"""classifier.runs.charts: phases named on the curves, accuracy axes from a floor, legends on
every compare panel; the per-class table in the confusion matrix's class order."""

from __future__ import annotations

import re

from classifier.runs import charts
from classifier.runs.selectors import per_class_rows

LABELS = {
    "loss": "Loss", "accuracy": "Accuracy", "epoch": "Epoch", "train": "train", "validation": "validation",
    "unfreeze": "unfreeze", "predicted": "Predicted", "true": "True", "head": "new head",
    "finetune": "fine-tuning", "dotted_train": "dotted: train loss",
}
EPOCHS = [
    {"phase": "head", "train_loss": 1.2, "val_loss": 1.0, "train_acc": 0.70, "val_acc": 0.72},
    {"phase": "head", "train_loss": 0.9, "val_loss": 0.8, "train_acc": 0.80, "val_acc": 0.81},
    {"phase": "finetune", "train_loss": 0.5, "val_loss": 0.6, "train_acc": 0.90, "val_acc": 0.88},
]


def test_accuracy_floor_sits_ten_points_under_the_lowest_value_rounded_down():
    assert charts.accuracy_floor([72.0, 95.0]) == 60.0
    assert charts.accuracy_floor([5.0]) == 0.0
    assert charts.accuracy_floor([]) == 0.0


def test_curves_name_each_phase_and_start_the_accuracy_axis_at_the_floor():
    svg = charts.curves_svg(EPOCHS, labels=LABELS)
    assert svg.count(">new head<") + svg.count("new head</text>") >= 2  # once per panel
    assert svg.count("fine-tuning") >= 2
    # Whole-number tick labels: epochs 1-3 and the accuracy axis from its floor (60), none under it.
    ticks = [int(t) for t in re.findall(r">(\d+)</text>", svg)]
    assert 60 in ticks and 100 in ticks and not any(4 <= t < 60 for t in ticks) and 0 not in ticks


def test_every_compare_panel_has_a_legend_with_every_run():
    svg = charts.compare_svg([("run A", EPOCHS), ("run B", EPOCHS[:2])], labels=LABELS)
    assert svg.count("run A") == 2 and svg.count("run B") == 2
    assert "dotted: train loss" in svg


def _size(svg: str) -> tuple[float, float]:
    match = re.search(r'<svg[^>]*width="([\d.]+)pt" height="([\d.]+)pt"', svg)
    return float(match.group(1)), float(match.group(2))


def test_the_phone_drawing_stacks_the_panels_at_about_the_width_it_is_shown():
    # Side by side the chart is about 2.8 times as wide as tall; stacked it is taller than wide and
    # drawn about 330 pt wide, so a 360-414 px phone shows its letters at close to their size.
    for draw in (lambda **kw: charts.curves_svg(EPOCHS, labels=LABELS, **kw),
                 lambda **kw: charts.compare_svg([("run A", EPOCHS), ("run B", EPOCHS[:2])], labels=LABELS, **kw)):
        wide_w, wide_h = _size(draw())
        stacked_w, stacked_h = _size(draw(stacked=True))
        assert wide_w > 2.2 * wide_h
        assert stacked_h > stacked_w and stacked_w < 400
        svg = draw(stacked=True)
        assert svg.count("Loss") >= 1 and svg.count("Accuracy") >= 1  # both panels are there


def test_the_per_class_table_follows_the_confusion_matrix_order():
    report = {
        "classes": ["beagle", "pug", "siberian_husky"],
        "per_class": {"pug": {"recall": 0.1}, "siberian_husky": {"recall": 0.9}, "beagle": {"recall": 0.5}},
    }
    assert [row["name"] for row in per_class_rows(report)] == ["beagle", "pug", "siberian_husky"]
