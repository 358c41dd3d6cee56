"""classifier.datasets.report: checking an ImageFolder dataset and splitting it."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from classifier.datasets.report import build_report
from training.splits import split_files


@pytest.fixture(autouse=True)
def _isolated_storage():
    """Overrides the Django-side autouse fixture of tests/classifier/conftest.py: this module is
    pure Python and must run without Django (``-p no:django``)."""


# Factories ------------------------------------------------------------------------------------


class ImageFactory:
    """Writes small distinct images; each call gets a new colour so file contents never collide."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def __call__(self, rel: str, size: tuple[int, int] = (96, 80), fmt: str = "JPEG") -> Path:
        self.count += 1
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        colour = ((self.count * 37) % 256, (self.count * 91) % 256, (self.count * 13) % 256)
        Image.new("RGB", size, colour).save(path, fmt)
        return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "dataset"
    folder.mkdir()
    return folder


@pytest.fixture
def make_image(root: Path) -> ImageFactory:
    return ImageFactory(root)


def fill(make_image: ImageFactory, counts: dict[str, int]) -> None:
    for class_name, count in counts.items():
        for index in range(count):
            make_image(f"{class_name}/{index}.jpg")


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels but carries almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def reasons(report: dict) -> dict[str, str]:
    return {item["path"]: item["reason"] for item in report["skipped"]}


# Report ---------------------------------------------------------------------------------------


def test_it_counts_images_per_class(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"pug": 6, "beagle": 7})
    report = build_report(root)
    assert report["classes"] == [
        {"name": "beagle", "images": 7, "skipped": 0},
        {"name": "pug", "images": 6, "skipped": 0},
    ]
    assert report["total_images"] == 13 and report["total_files"] == 13
    assert report["imbalance_ratio"] == pytest.approx(7 / 6, abs=1e-3)
    assert report["problems"] == [] and report["warnings"] == []
    assert report["usable_files"]["pug"] == [f"pug/{i}.jpg" for i in range(6)]
    assert json.loads(json.dumps(report)) == report


def test_it_finds_exact_duplicates_also_across_classes(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})
    (root / "pug" / "copy.jpg").write_bytes((root / "beagle" / "0.jpg").read_bytes())
    (root / "beagle" / "copy.jpg").write_bytes((root / "beagle" / "1.jpg").read_bytes())
    report = build_report(root)
    groups = {tuple(group["paths"]): group["cross_class"] for group in report["duplicates"]}
    assert groups == {("beagle/0.jpg", "pug/copy.jpg"): True, ("beagle/1.jpg", "beagle/copy.jpg"): False}
    assert all(len(group["sha256"]) == 64 for group in report["duplicates"])
    assert any("identical files" in warning for warning in report["warnings"])
    assert report["problems"] == []


def test_it_skips_tiny_images(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})
    make_image("pug/tiny.jpg", size=(300, 40))
    make_image("pug/edge.jpg", size=(64, 64))
    report = build_report(root)
    assert reasons(report) == {"pug/tiny.jpg": "tiny"}
    assert "300x40" in report["skipped"][0]["detail"]
    assert "pug/edge.jpg" in report["usable_files"]["pug"]
    assert build_report(root, min_side=30)["total_images"] == 12


def test_it_skips_corrupt_images_and_non_images(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})
    whole = make_image("pug/whole.jpg", size=(400, 300)).read_bytes()
    (root / "pug" / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    png = make_image("pug/source.png", fmt="PNG").read_bytes()
    (root / "pug" / "source.png").unlink()
    (root / "pug" / "garbled.png").write_bytes(png[:-20] + b"\x00" * 20)  # header intact, data garbled
    (root / "pug" / "notes.txt").write_text("good boy")
    (root / "pug" / "photo.jpg").write_bytes(b"<html>not a photo</html>")
    report = build_report(root)
    assert reasons(report) == {
        "pug/truncated.jpg": "corrupt",
        "pug/garbled.png": "corrupt",
        "pug/notes.txt": "not_image",
        "pug/photo.jpg": "not_image",
    }
    assert report["classes"][1] == {"name": "pug", "images": 6, "skipped": 4}


def test_it_skips_a_png_declaring_a_decompression_bomb(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})
    (root / "pug" / "bomb.png").write_bytes(png_declaring(50_000, 50_000))
    report = build_report(root)
    assert reasons(report) == {"pug/bomb.png": "too_many_pixels"}


def test_it_treats_images_over_a_lowered_pillow_limit_as_bombs(
    root: Path, make_image: ImageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})  # 96 x 80 = 7,680 pixels each
    make_image("pug/warns.jpg", size=(120, 100))  # 12,000: over the limit (Pillow warns)
    make_image("pug/errors.jpg", size=(200, 200))  # 40,000: over twice the limit (Pillow raises)
    (root / "pug" / "declared.png").write_bytes(png_declaring(300, 300))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    report = build_report(root)
    assert report["settings"]["max_pixels"] == 10_000
    assert reasons(report) == {p: "too_many_pixels" for p in ("pug/warns.jpg", "pug/errors.jpg", "pug/declared.png")}
    # An explicit limit wins over Pillow's.
    assert set(reasons(build_report(root, max_pixels=5_000))) >= {"beagle/0.jpg", "pug/0.jpg"}


def test_it_reports_a_single_class_as_a_problem(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 6})
    report = build_report(root)
    assert report["problems"] == ["Found 1 class folder with usable photos; at least two are needed."]
    assert report["problem_items"] == [{"code": "few_classes", "found": 1}]
    assert report["imbalance_ratio"] == 1.0


def test_it_reports_classes_with_too_few_usable_photos(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 3})
    make_image("pug/tiny.jpg", size=(10, 10))
    report = build_report(root)
    assert report["problems"] == ["The class 'pug' has 3 usable photos; at least 5 are needed."]
    assert report["problem_items"] == [{"code": "few_photos", "name": "pug", "photos": 3, "needed": 5}]
    assert build_report(root, min_images_per_class=3)["problems"] == []


def test_it_reports_empty_class_folders(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})
    (root / "husky").mkdir()
    (root / "corgi").mkdir()
    (root / "corgi" / ".DS_Store").write_bytes(b"junk")
    report = build_report(root)
    assert report["problems"] == ["The class folder 'corgi' is empty.", "The class folder 'husky' is empty."]
    assert [c["name"] for c in report["classes"]] == ["beagle", "corgi", "husky", "pug"]
    assert report["imbalance_ratio"] == 1.0  # empty classes are problems, not an infinite ratio


def test_it_warns_about_heavy_imbalance(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 31, "pug": 5})
    report = build_report(root)
    assert report["imbalance_ratio"] == pytest.approx(6.2)
    assert report["warnings"] == [
        "The classes are heavily imbalanced: 'beagle' has 31 photos, 6.2 times as many as 'pug' (5)."
    ]
    assert report["problems"] == []


def test_it_skips_hidden_files_top_level_files_and_junk(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})
    make_image("loose.jpg")
    make_image("pug/._0.jpg")
    make_image(".cache/x.jpg")
    make_image("__MACOSX/pug/0.jpg")
    make_image("pug/.thumbs/1.jpg")
    (root / "pug" / "Thumbs.db").write_bytes(b"junk")
    report = build_report(root)
    assert reasons(report) == {
        ".cache": "hidden",
        "__MACOSX": "hidden",
        "loose.jpg": "outside_class",
        "pug/.thumbs": "hidden",
        "pug/._0.jpg": "hidden",
        "pug/Thumbs.db": "hidden",
    }
    assert [c["name"] for c in report["classes"]] == ["beagle", "pug"]


def test_it_includes_photos_in_nested_folders_of_a_class(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"beagle": 5, "pug": 4})
    make_image("pug/puppies/a.jpg")
    report = build_report(root)
    assert "pug/puppies/a.jpg" in report["usable_files"]["pug"]
    assert report["problems"] == []


def test_it_accepts_unicode_class_names(root: Path, make_image: ImageFactory) -> None:
    fill(make_image, {"такса": 5, "лайка": 5})
    make_image("такса/фото.jpg")
    report = build_report(root)
    assert [c["name"] for c in report["classes"]] == ["лайка", "такса"]
    assert "такса/фото.jpg" in report["usable_files"]["такса"]


def test_it_summarises_image_sizes(root: Path, make_image: ImageFactory) -> None:
    for index, size in enumerate([(100, 80), (300, 200), (600, 500), (2000, 1500), (3000, 2100)]):
        make_image(f"beagle/{index}.jpg", size=size)
    report = build_report(root)
    sizes = report["sizes"]
    assert sizes["width"] == {"min": 100, "median": 600, "max": 3000}
    assert sizes["height"] == {"min": 80, "median": 500, "max": 2100}
    assert {b["bucket"]: b["count"] for b in sizes["shorter_side_histogram"]} == {
        "0-127": 1,
        "128-255": 1,
        "256-511": 1,
        "512-1023": 0,
        "1024-2047": 1,
        ">=2048": 1,
    }


def test_it_follows_symlinked_class_folders(tmp_path: Path, make_image: ImageFactory, root: Path) -> None:
    fill(make_image, {"beagle": 5, "pug": 5})
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in ("beagle", "pug"):
        (linked / name).symlink_to(root / name, target_is_directory=True)
    (root / "pug" / "loop").symlink_to(root / "pug", target_is_directory=True)  # must not loop forever
    report = build_report(linked)
    assert report["total_images"] == 10


def test_it_refuses_a_root_that_is_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        build_report(tmp_path / "missing")


def test_it_reports_on_real_stanford_dogs_photos(stanford_dogs_dir: Path, tmp_path: Path) -> None:
    breeds = ["beagle", "pug", "samoyed"]
    view = tmp_path / "three-breeds"  # symlinks only: no photo is copied
    view.mkdir()
    for breed in breeds:
        (view / breed).symlink_to(stanford_dogs_dir / breed, target_is_directory=True)
    report = build_report(view)
    assert [c["name"] for c in report["classes"]] == breeds
    assert report["total_files"] == sum(len(list((stanford_dogs_dir / b).iterdir())) for b in breeds)
    assert report["total_images"] >= 0.9 * report["total_files"]
    assert report["problems"] == []
    assert report["sizes"]["width"]["min"] >= 64
    split = split_files(report["usable_files"], seed=0)  # the splitter's own tests: tests/training/test_splits.py
    assert {rel.split("/")[0] for rel in split["val"]} == set(breeds) == {rel.split("/")[0] for rel in split["test"]}
    assert json.loads(json.dumps(report)) == report
