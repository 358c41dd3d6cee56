"""manage.py import_dataset NAME PATH | NAME --oxford-pets-dogs"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.error
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from classifier.management.commands import import_dataset
from classifier.models import Dataset
from tests.classifier.dataset_archives import files_under, jpeg_bytes

pytestmark = pytest.mark.django_db

REPO_ROOT = Path(__file__).resolve().parents[3]


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_dataset", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_it_imports_a_folder_of_real_photos(stanford_dogs_dir, tmp_path, settings):
    source = tmp_path / "two"
    for breed in ("beagle", "pug"):
        shutil.copytree(stanford_dogs_dir / breed, source / breed)
    out, err = run("stanford-2", str(source), "--seed", "1", "--val-fraction", "0.25")
    dataset = Dataset.objects.get(name="stanford-2")
    assert f"Imported stanford-2 v1 (id {dataset.pk})" in out and err == ""
    assert dataset.classes == ["beagle", "pug"] and dataset.split["seed"] == 1
    assert (Path(settings.DATASETS_ROOT) / dataset.path / "beagle").is_dir()


def test_a_missing_folder_is_one_line_and_exit_code_2(tmp_path):
    with pytest.raises(CommandError, match="is not a folder") as caught:
        run("dogs", str(tmp_path / "nope"))
    assert caught.value.returncode == 2
    assert not Dataset.objects.exists()


def test_it_needs_exactly_one_source(tmp_path):
    with pytest.raises(CommandError, match="either PATH or --oxford-pets-dogs") as caught:
        run("dogs")
    assert caught.value.returncode == 2
    with pytest.raises(CommandError, match="either PATH or --oxford-pets-dogs"):
        run("dogs", str(tmp_path), "--oxford-pets-dogs")


def test_without_internet_the_oxford_import_says_so_and_exits_2(monkeypatch, settings):
    def offline(root):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(import_dataset, "download_oxford_pet", offline)
    with pytest.raises(CommandError) as caught:
        run("pets", "--oxford-pets-dogs")
    assert caught.value.returncode == 2
    assert str(caught.value) == (
        "cannot download Oxford-IIIT Pet: [Errno -3] Temporary failure in name resolution; "
        "import a folder instead with import_dataset NAME PATH"
    )
    assert not Dataset.objects.exists() and files_under(Path(settings.DATASETS_ROOT)) == set()


def fake_oxford_download(root: Path) -> Path:
    """The layout torchvision's OxfordIIITPet reads: images/*.jpg and annotations/{trainval,test}.txt.
    Dog files have lower-case names, cat files capitalised ones; class ids are alphabetical (1-based)."""
    base = root / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations").mkdir()
    breeds = [("Abyssinian", 1), ("american_bulldog", 2), ("beagle", 2), ("Bengal", 1), ("yorkshire_terrier", 2)]
    ordered = sorted(breeds, key=lambda item: item[0].lower())
    lines = {"trainval": [], "test": []}
    seed = 0
    for class_id, (breed, species) in enumerate(ordered, start=1):
        for index in range(1, 8):
            seed += 1
            image_id = f"{breed}_{index}"
            (base / "images" / f"{image_id}.jpg").write_bytes(jpeg_bytes(seed))
            split = "test" if index > 5 else "trainval"
            lines[split].append(f"{image_id} {class_id} {species} {index}")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return base


def test_the_oxford_import_keeps_only_the_dog_breeds(monkeypatch):
    monkeypatch.setattr(import_dataset, "download_oxford_pet", fake_oxford_download)
    out, _err = run("pets", "--oxford-pets-dogs")
    dataset = Dataset.objects.get(name="pets")
    assert dataset.classes == ["american_bulldog", "beagle", "yorkshire_terrier"]
    assert dataset.image_count == 21 and dataset.problems == []
    assert "Kept 21 photos of 3 dog breeds." in out
    assert dataset.report["source"]["name"] == "Oxford-IIIT Pet (dogs)"


def test_the_dog_breed_list_has_the_25_dogs_of_oxford_iiit_pet():
    assert len(import_dataset.OXFORD_PET_DOG_BREEDS) == len(set(import_dataset.OXFORD_PET_DOG_BREEDS)) == 25
    cats = {"Abyssinian", "Bengal", "Birman", "Bombay", "British Shorthair", "Egyptian Mau", "Maine Coon", "Persian",
            "Ragdoll", "Russian Blue", "Siamese", "Sphynx"}  # fmt: skip
    assert not cats & set(import_dataset.OXFORD_PET_DOG_BREEDS)


def test_the_command_line_prints_one_line_and_exits_2(tmp_path):
    env = {"DJANGO_SETTINGS_MODULE": "config.test_settings", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "manage.py", "import_dataset", "dogs", str(tmp_path / "missing")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"CommandError: {tmp_path / 'missing'} is not a folder."]
