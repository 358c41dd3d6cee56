"""Exported archives: the README's snippet answers like the Predictor; read_archive refuses what it must."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

BREEDS = ("beagle", "golden_retriever", "pug", "siberian_husky", "chihuahua", "dingo")
PER_BREED = 10

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(stanford_dogs_dir, tmp_path_factory) -> Path:
    from training.config import TrainConfig
    from training.finetune import finetune

    data = tmp_path_factory.mktemp("dogs6")
    for breed in BREEDS:
        (data / breed).mkdir()
        for photo in sorted((stanford_dogs_dir / breed).iterdir())[:PER_BREED]:
            os.symlink(photo, data / breed / photo.name)
    out = tmp_path_factory.mktemp("run-dogs6")
    finetune(TrainConfig(data_dir=str(data), backbone="efficientnet_lite0", finetune_epochs=0, augmentation="none", device="cpu", num_workers=0, seed=0),
             out_dir=out)
    return out


@pytest.fixture(scope="module")
def archive(run_dir, tmp_path_factory) -> Path:
    from training.export import export_model

    out = tmp_path_factory.mktemp("export") / "model.zip"
    export_model(run_dir, out, dataset={"name": "dogs6", "version": 1})
    return out


def _unpack(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    return dest


def test_readme_snippet_gives_the_predictors_top5_on_held_out_photos(archive, run_dir, stanford_dogs_dir, not_dogs_dir, tmp_path):
    from training.archive import display_name, extract_snippet
    from training.predict import Predictor

    folder = _unpack(archive, tmp_path / "x")
    snippet = extract_snippet((folder / "README.md").read_text())
    assert len(snippet.strip().splitlines()) == 10
    (folder / "classify.py").write_text(snippet)
    photos = [sorted((stanford_dogs_dir / b).iterdir())[-1] for b in BREEDS[:3]]
    photos.append(sorted(p for p in (not_dogs_dir).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[0])
    predictor = Predictor.from_dir(run_dir)
    for photo in photos:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([sys.executable, "classify.py", str(photo)], cwd=folder, capture_output=True, text=True,
                              timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        lines = [line.split("\t") for line in done.stdout.strip().splitlines()]
        with Image.open(photo) as img:
            expected = predictor.predict([img.convert("RGB")], top_k=5)[0]
        assert [name for name, _ in lines] == [display_name(n) for n, _ in expected], photo
        for (_, p), (_, q) in zip(lines, expected):
            assert abs(float(p) - q) < 1e-3


def test_archive_carries_labels_preprocessing_thresholds_and_a_model_card(archive, run_dir, tmp_path):
    folder = _unpack(archive, tmp_path / "x")
    meta = json.loads((run_dir / "meta.json").read_text())
    labels = json.loads((folder / "labels.json").read_text())
    assert [x["name"] for x in labels] == meta["class_names"]
    assert labels[1] == {"index": 1, "name": "chihuahua", "display_name": "Chihuahua"}
    assert labels[3]["display_name"] == "Golden retriever"
    pre = json.loads((folder / "preprocessing.json").read_text())
    assert {k: pre[k] for k in ("image_size", "resize_size", "mean", "std")} == {
        k: meta["preprocessing"][k] for k in ("image_size", "resize_size", "mean", "std")}
    thresholds = json.loads((folder / "thresholds.json").read_text())
    assert thresholds["source"] == "default" and 0 < thresholds["dog_mass"] < 1
    card = json.loads((folder / "model_card.json").read_text())
    assert card["dataset"] == {"name": "dogs6", "version": 1}
    assert card["accuracy"]["test_acc"] == meta["metrics"]["test_acc"]
    assert card["photos"]["train_images"] == meta["metrics"]["train_images"]
    assert set(card["per_class"]["classes"]) <= set(meta["class_names"]) and card["per_class"]["classes"]
    assert card["backbone"]["licence"] == "Apache-2.0"
    assert "Per-class results" in (folder / "model_card.md").read_text()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["outputs"] == ["probabilities", "dog_mass"]


def test_read_archive_rebuilds_a_run_folder_that_answers_the_same(archive, run_dir, stanford_dogs_dir, tmp_path):
    from training.model_import import read_archive
    from training.predict import Predictor

    imported = read_archive(archive, tmp_path / "imported")
    photo = sorted((stanford_dogs_dir / "pug").iterdir())[-1]
    with Image.open(photo) as img:
        img = img.convert("RGB")
        assert Predictor.from_dir(imported.folder).predict([img]) == Predictor.from_dir(run_dir).predict([img])
    assert imported.class_names == json.loads((run_dir / "meta.json").read_text())["class_names"]


def _rewrite(archive: Path, out: Path, *, drop=(), add=None, rehash=True) -> Path:
    """A copy of ``archive`` with members dropped/replaced; the manifest's checksums follow when ``rehash``."""
    add = dict(add or {})
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if n not in drop}
    members.update(add)
    if rehash:
        manifest = json.loads(members["manifest.json"])
        manifest["files"] = {n: {"size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in members.items()
                             if n != "manifest.json"}
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(out, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    return out


def _refused(path: Path, dest: Path) -> str:
    from training.model_import import ArchiveError, read_archive

    with pytest.raises(ArchiveError) as info:
        read_archive(path, dest)
    assert not dest.exists()
    return str(info.value)


def test_it_refuses_pickled_weights_unknown_files_and_non_zips(archive, tmp_path):
    pickled = _rewrite(archive, tmp_path / "a.zip", add={"model.pt": b"\x80\x04pickle"})
    assert "pickled weights are refused" in _refused(pickled, tmp_path / "d")
    extra = _rewrite(archive, tmp_path / "b.zip", add={"../evil.json": b"{}"})
    assert "is not a file of a Breedlab model archive" in _refused(extra, tmp_path / "d")
    (tmp_path / "c.zip").write_bytes(b"not a zip")
    assert "not a zip archive" in _refused(tmp_path / "c.zip", tmp_path / "d")
    missing = _rewrite(archive, tmp_path / "e.zip", drop=("model.safetensors",))
    assert "lacks model.safetensors" in _refused(missing, tmp_path / "d")


def test_it_refuses_an_altered_file_with_the_old_checksum(archive, tmp_path):
    altered = _rewrite(archive, tmp_path / "a.zip", add={"labels.json": b"[]"}, rehash=False)
    assert "does not match the manifest's checksum" in _refused(altered, tmp_path / "d")


def test_it_refuses_weights_of_the_wrong_shape_and_answers_that_disagree(archive, tmp_path):
    import torch
    from safetensors.torch import load, save

    with zipfile.ZipFile(archive) as zf:
        state = load(zf.read("model.safetensors"))
        recorded = json.loads(zf.read("sample_outputs.json"))
    wrong = dict(state, **{"head.weight": torch.zeros(3, state["head.weight"].shape[1])})
    bad_shape = _rewrite(archive, tmp_path / "a.zip", add={"model.safetensors": save(wrong)})
    assert "wrong shape" in _refused(bad_shape, tmp_path / "d")
    shifted = dict(state, **{"head.bias": state["head.bias"] + torch.arange(state["head.bias"].numel()).float()})
    disagree = _rewrite(archive, tmp_path / "b.zip", add={"model.safetensors": save(shifted)})
    assert "do not give the recorded answer" in _refused(disagree, tmp_path / "d")
    recorded["probabilities"] = list(reversed(recorded["probabilities"]))
    lying = _rewrite(archive, tmp_path / "c.zip", add={"sample_outputs.json": json.dumps(recorded).encode()})
    assert "do not give the recorded answer" in _refused(lying, tmp_path / "d")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="JPEG")
    not_png = _rewrite(archive, tmp_path / "e.zip", add={"sample.png": buf.getvalue()})
    assert "must be a PNG" in _refused(not_png, tmp_path / "d")


def test_cli_export_writes_the_archive_and_refuses_a_missing_run(run_dir, tmp_path):
    from training.__main__ import main

    assert main(["export", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.zip")]) == 2
    assert not (tmp_path / "m.zip").exists()
    done = subprocess.run([sys.executable, "-m", "training", "export", "--model", str(run_dir), "--out", str(tmp_path / "m.zip")],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("exported ") and zipfile.is_zipfile(tmp_path / "m.zip")
