"""Class names that cannot break pages: charts draw them as plain text (issue 13, bullet 6)."""

from __future__ import annotations

import pytest

from classifier.datasets.charts import class_counts_svg
from classifier.runs import charts

HOSTILE = [
    r"$\foo$",  # mathtext: matplotlib raised on it, and the page 500ed for good
    r"$x^2$ and $",
    "back\\slash\\",
    "new\nline",
    "כלב רועים",  # right-to-left
    "كلب\u202eevil",  # with a right-to-left override
    "b" * 200,
    "<script>alert(1)</script>",
]
LABELS = {"predicted": "predicted", "true": "true", "loss": "loss", "accuracy": "accuracy", "epoch": "epoch",
          "train": "train", "validation": "validation", "unfreeze": "unfreeze"}


def test_the_confusion_matrix_draws_every_hostile_name_as_plain_text():
    k = len(HOSTILE)
    matrix = [[3 if i == j else 1 for j in range(k)] for i in range(k)]
    svg = charts.confusion_svg(matrix, HOSTILE, cell_url=lambda i, j: f"/x?i={i}&j={j}", labels=LABELS)
    assert r"$\foo$" in svg or "\\foo" in svg  # drawn literally (svg.fonttype none keeps text as text)
    assert "<script>" not in svg


@pytest.mark.parametrize("name", HOSTILE)
def test_compare_and_dataset_charts_take_hostile_names(name):
    epochs = [{"phase": "head", "train_loss": 1.0, "val_loss": 1.1, "val_acc": 0.5}]
    svg = charts.compare_svg([(name, epochs), ("other", epochs)], labels=LABELS)
    assert svg.startswith("<svg")
    out = class_counts_svg([{"name": name, "images": 4}], {"val": [f"{name}/a.jpg"]})
    assert out.startswith(b"<?xml") or b"<svg" in out


@pytest.mark.parametrize("name", ["dogs/new\nline.jpg", "dogs\ttab/a.jpg", "dogs/esc\x1b[31m.jpg", "cr\r/a.jpg", "dogs/del\x7f.jpg"])
def test_control_characters_in_archive_paths_are_refused(tmp_path, name):
    from classifier.datasets.archives import ArchiveError, extract_archive
    from tests.classifier.dataset_archives import jpeg_bytes, make_zip

    archive = make_zip(tmp_path / "a.zip", {"dogs/ok.jpg": jpeg_bytes(1), "cats/ok.jpg": jpeg_bytes(2), name: jpeg_bytes(3)})
    with pytest.raises(ArchiveError, match="control character"):
        extract_archive(archive, tmp_path / "out")


@pytest.mark.parametrize("name", [r"$\foo$", "back\\slash", "כלב", "b" * 200])
def test_odd_but_printable_names_are_kept(tmp_path, name):
    from classifier.datasets.archives import extract_archive
    from tests.classifier.dataset_archives import jpeg_bytes, make_zip

    entries = {f"{name.replace(chr(92), '_')}/{i}.jpg": jpeg_bytes(i) for i in range(2)}
    entries.update({f"other/{i}.jpg": jpeg_bytes(10 + i) for i in range(2)})
    result = extract_archive(make_zip(tmp_path / "a.zip", entries), tmp_path / "out")
    assert name.replace("\\", "_") in result.classes
