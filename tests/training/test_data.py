import json
import warnings

import pytest
import torch

from tests.training.conftest import make_image_folder
from training.config import TrainConfig
from training.data import (
    EvalTransform,
    TrainTransform,
    decode_images,
    resolve_workers,
    scan_image_folder,
    train_transform,
)
from training.errors import DataError
from training.splits import load_splits


def test_scan_lists_classes_and_skips_non_images_with_reasons(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 3, "blue": 2})
    (root / "red" / "notes.txt").write_text("hello")
    (root / "blue" / "fake.jpg").write_bytes(b"not a jpeg at all")
    classes, samples, skipped = scan_image_folder(root)
    assert classes == ["blue", "red"]
    assert len(samples) == 5
    assert {rel for rel, _ in skipped} == {"red/notes.txt", "blue/fake.jpg"}
    assert all(reason for _, reason in skipped)


def test_scan_of_missing_folder_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "nope")


def test_truncated_image_fails_at_decode_and_is_reported(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 2}, fmt="jpg", size=64)
    good = root / "red" / "000.jpg"
    data = good.read_bytes()
    (root / "red" / "broken.jpg").write_bytes(data[: len(data) // 2])
    _, samples, _ = scan_image_folder(root)
    images, failures = decode_images([s.path for s in samples], resize_size=32)
    broken = [i for i, s in enumerate(samples) if s.relpath == "red/broken.jpg"]
    assert list(failures) == broken
    assert images[0].dtype == torch.uint8 and min(images[0].shape[1:]) == 32


def test_decoding_in_worker_processes_equals_decoding_here(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 20, "blue": 20})
    _, samples, _ = scan_image_folder(root)
    here, _ = decode_images([s.path for s in samples], resize_size=36, num_workers=0)
    workers, _ = decode_images([s.path for s in samples], resize_size=36, num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(here, workers))


def test_split_file_is_used_exactly(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 3, "blue": 3})
    split = {"train": ["red/000.png", "red/001.png", "blue/000.png"], "val": ["red/002.png", "blue/001.png"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    splits = load_splits(TrainConfig(data_dir=str(root), split_file=str(tmp_path / "split.json")))
    assert [s.relpath for s in splits.train] == split["train"]
    assert [s.relpath for s in splits.val] == split["val"]
    assert splits.test == []


def test_split_file_with_a_test_part_and_an_overlap_is_refused(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 3, "blue": 3})
    split = {"train": ["red/000.png", "blue/000.png"], "val": ["red/001.png"], "test": ["red/001.png"]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    with pytest.raises(DataError, match="two parts"):
        load_splits(TrainConfig(data_dir=str(root), split_file=str(tmp_path / "split.json")))


def test_split_file_naming_unknown_images_is_a_data_error(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 2, "blue": 2})
    (tmp_path / "split.json").write_text(json.dumps({"train": ["red/000.png", "red/nope.png"], "val": ["blue/000.png"]}))
    with pytest.raises(DataError, match="red/nope.png"):
        load_splits(TrainConfig(data_dir=str(root), split_file=str(tmp_path / "split.json")))


@pytest.mark.parametrize(
    "counts, fragment",
    [({"red": 4}, "at least two class"), ({"red": 4, "blue": 1}, "blue \\(1\\)")],
)
def test_too_few_classes_or_images_is_a_data_error(tmp_path, counts, fragment):
    root = make_image_folder(tmp_path / "d", counts)
    with pytest.raises(DataError, match=fragment):
        load_splits(TrainConfig(data_dir=str(root)))


def test_train_transform_is_deterministic_for_a_generator_and_varies_across_seeds():
    img = torch.randint(0, 255, (3, 48, 60), dtype=torch.uint8)
    tf = TrainTransform(size=32, mean=(0.5,) * 3, std=(0.5,) * 3, jitter=0.2)
    a = tf(img, torch.Generator().manual_seed(1))
    b = tf(img, torch.Generator().manual_seed(1))
    c = tf(img, torch.Generator().manual_seed(2))
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


def test_eval_transform_centre_crops_and_normalises():
    img = torch.full((3, 40, 50), 255, dtype=torch.uint8)
    out = EvalTransform(size=32, mean=(0.5,) * 3, std=(0.5,) * 3)(img)
    assert out.shape == (3, 32, 32) and torch.allclose(out, torch.ones_like(out))


def test_augmentation_presets_are_keyword_only_classes():
    assert isinstance(train_transform("none", size=32, mean=(0,) * 3, std=(1,) * 3), EvalTransform)
    assert isinstance(train_transform("standard", size=32, mean=(0,) * 3, std=(1,) * 3), TrainTransform)
    with pytest.raises(TypeError):
        TrainTransform(32, (0,) * 3, (1,) * 3)  # type: ignore[misc]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train_transform("light", size=32, mean=(0,) * 3, std=(1,) * 3)


def test_worker_count_is_zero_inside_a_daemonic_process(monkeypatch):
    import multiprocessing

    class Daemon:
        daemon = True

    assert resolve_workers(-1) >= 1
    monkeypatch.setattr(multiprocessing, "current_process", lambda: Daemon())
    assert resolve_workers(-1) == 0 and resolve_workers(4) == 0
