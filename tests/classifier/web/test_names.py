"""classifier.web.names: breeds and model versions as people read them, in English and Russian."""

from __future__ import annotations

import csv

import pytest
from django.utils import translation

from classifier.web.names import class_display_name, version_display_name


def test_folder_and_imagenet_spellings_read_as_words_in_english():
    with translation.override("en"):
        assert class_display_name("australian_terrier") == "Australian terrier"
        assert class_display_name("black-and-tan coonhound") == "Black-and-tan coonhound"
        assert class_display_name("my_own_class") == "My own class"


def test_russian_names_cover_the_120_stanford_dogs_breeds(stanford_dogs_dir):
    with (stanford_dogs_dir / "breeds.csv").open() as fh:
        folders = [row["folder"] for row in csv.DictReader(fh)]
    assert len(folders) == 120
    with translation.override("ru"):
        untranslated = [name for name in folders if class_display_name(name).isascii()]
        assert untranslated == []
        assert class_display_name("australian_terrier") == "Австралийский терьер"
        # ImageNet's spelling of the same breed finds the same name; unknown classes stay readable.
        assert class_display_name("black-and-tan coonhound") == class_display_name("black_and_tan_coonhound")
        assert class_display_name("my_own_class") == "My own class"


@pytest.mark.parametrize(
    ("stored", "shown"),
    [("dogs5-v1-run1", "Dogs 5 · v1 · run #1"), ("journey-dogs-api-v2-run14", "Journey dogs api · v2 · run #14"),
     ("Pretrained thing", "Pretrained thing")],
)
def test_version_names_read_as_dataset_version_and_run(stored, shown):
    with translation.override("en"):
        assert version_display_name(stored) == shown


def test_version_names_in_russian():
    with translation.override("ru"):
        assert version_display_name("dogs5-v1-run1") == "Dogs 5 · v1 · запуск №1"
