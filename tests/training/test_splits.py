"""The one splitter: train / val / test, seeded, stratified, duplicate-aware."""

import shutil
from collections import Counter

import pytest
from PIL import Image

from tests.training.conftest import make_image_folder
from training.config import TrainConfig
from training.errors import DataError
from training.splits import duplicate_groups, file_fingerprint, load_splits, split_files

FILES = {
    "beagle": [f"beagle/{i:02d}.jpg" for i in range(20)],
    "pug": [f"pug/{i:02d}.jpg" for i in range(10)],
    "tiny": ["tiny/a.jpg", "tiny/b.jpg", "tiny/c.jpg"],
}


def _part_of(split, rel):
    return next(part for part, rels in split.items() if rel in rels)


def test_every_file_lands_in_exactly_one_part_with_each_class_stratified():
    split = split_files(FILES, val_fraction=0.15, test_fraction=0.15, seed=0)
    every = [r for rels in split.values() for r in rels]
    assert sorted(every) == sorted(r for rels in FILES.values() for r in rels)
    assert len(every) == len(set(every))
    per = {part: Counter(r.split("/")[0] for r in rels) for part, rels in split.items()}
    assert (per["val"]["beagle"], per["test"]["beagle"]) == (3, 3)
    assert (per["val"]["pug"], per["test"]["pug"]) == (2, 2)
    assert (per["train"]["tiny"], per["val"]["tiny"], per["test"]["tiny"]) == (1, 1, 1)


def test_split_is_seeded_and_one_class_does_not_move_another():
    first = split_files(FILES, seed=3)
    assert split_files({k: list(reversed(v)) for k, v in FILES.items()}, seed=3) == first
    assert split_files(FILES, seed=4)["test"] != first["test"]
    alone = split_files({"beagle": FILES["beagle"]}, seed=3)
    assert [r for r in first["test"] if r.startswith("beagle/")] == alone["test"]


def test_duplicates_never_straddle_two_parts():
    # Five copies of one photo in beagle, and one of them also filed under pug.
    groups = {r: r for rels in FILES.values() for r in rels}
    copies = ["beagle/00.jpg", "beagle/01.jpg", "beagle/02.jpg", "beagle/03.jpg", "beagle/04.jpg", "pug/07.jpg"]
    for r in copies:
        groups[r] = "same-photo"
    for seed in range(20):
        split = split_files(FILES, seed=seed, groups=groups)
        assert len({_part_of(split, r) for r in copies}) == 1, seed
        assert all(split[p] for p in ("train", "val", "test"))


def test_inherited_files_keep_their_part_and_new_files_are_split():
    old = split_files({"beagle": FILES["beagle"][:10]}, seed=1)
    new = split_files({"beagle": FILES["beagle"]}, seed=1, inherit=old)
    for part, rels in old.items():
        assert set(rels) <= set(new[part])


@pytest.mark.parametrize("val, test", [(1.0, 0.1), (0.5, 0.5), (-0.1, 0.1)])
def test_impossible_fractions_are_refused(val, test):
    with pytest.raises(DataError, match="fraction"):
        split_files(FILES, val_fraction=val, test_fraction=test)


def test_re_encoded_copies_share_a_perceptual_hash_and_form_one_group(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 2}, size=96, fmt="png")
    original = root / "red" / "000.png"
    Image.open(original).convert("RGB").save(root / "red" / "copy.jpg", quality=90)
    Image.open(original).resize((80, 80)).save(root / "red" / "smaller.png")
    shutil.copy(original, root / "red" / "bytes.png")
    prints = {p.name: file_fingerprint(p) for p in (root / "red").iterdir()}
    groups = duplicate_groups(prints)
    assert groups["copy.jpg"] == groups["000.png"] == groups["smaller.png"] == groups["bytes.png"]
    assert groups["001.png"] != groups["000.png"]


def test_a_folder_run_splits_three_ways_and_keeps_copies_together(tmp_path):
    root = make_image_folder(tmp_path / "d", {"red": 12, "blue": 12}, size=64)
    for i in range(3):
        shutil.copy(root / "red" / "000.png", root / "red" / f"dup{i}.png")
    splits = load_splits(TrainConfig(data_dir=str(root), seed=2))
    parts = {name: {s.relpath for s in getattr(splits, name)} for name in ("train", "val", "test")}
    assert all(parts.values())
    copies = {"red/000.png", "red/dup0.png", "red/dup1.png", "red/dup2.png"}
    assert sum(1 for rels in parts.values() if rels & copies) == 1


def test_split_uses_forward_slashes_and_is_json_serialisable():
    import json

    split = split_files({"pug": ["pug\\a.jpg", "pug\\b.jpg"]})
    assert sorted(split["train"] + split["val"] + split["test"]) == ["pug/a.jpg", "pug/b.jpg"]
    assert json.loads(json.dumps(split)) == split
