"""A dataset report's problems, warnings and skip reasons in the reader's language, with nouns in the
form their numbers take; reports stored before the codes existed keep their English sentences."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.utils import translation

from classifier.datasets.report import build_report
from classifier.datasets.report_text import problem_sentences, skip_reason, warning_sentences


def _report(problems=(), warnings=()) -> dict:
    return {"problem_items": list(problems), "warning_items": list(warnings)}


@pytest.mark.parametrize(
    ("language", "files", "expected"),
    [("en", 1, "1 file was skipped"), ("en", 2, "2 files were skipped"), ("ru", 1, "Пропущен 1 файл;"),
     ("ru", 2, "Пропущено 2 файла;"), ("ru", 5, "Пропущено 5 файлов;"), ("ru", 21, "Пропущен 21 файл;")],
)
def test_skipped_files_are_counted_in_the_readers_language(language, files, expected):
    with translation.override(language):
        assert expected in warning_sentences(_report(warnings=[{"code": "skipped", "files": files}]))[0]


@pytest.mark.parametrize(
    ("language", "photos", "expected"),
    [("en", 1, "has 1 usable photo;"), ("en", 3, "has 3 usable photos;"), ("ru", 1, "1 пригодная фотография;"),
     ("ru", 3, "3 пригодные фотографии;"), ("ru", 5, "5 пригодных фотографий;"), ("ru", 21, "21 пригодная фотография;")],
)
def test_a_class_with_too_few_photos_reads_well_for_any_count(language, photos, expected):
    item = {"code": "few_photos", "name": "pug", "photos": photos, "needed": 5}
    with translation.override(language):
        assert expected in problem_sentences(_report(problems=[item]))[0]


def test_russian_sentences_hold_no_english_but_the_folder_to_fix():
    items = [{"code": "few_classes", "found": 1}, {"code": "empty_class", "name": "husky"}]
    warnings = [
        {"code": "imbalanced", "largest": "beagle", "largest_photos": 31, "ratio": 6.2, "smallest": "pug", "smallest_photos": 5},
        {"code": "duplicates", "groups": 2, "extra": 2, "cross": 1},
    ]
    with translation.override("ru"):
        problems = problem_sentences(_report(problems=items))
        notes = warning_sentences(_report(warnings=warnings))
        reason = skip_reason("tiny")
    assert problems == ["Найдена 1 папка класса с пригодными фотографиями; нужно хотя бы две.", "Папка класса «husky» пуста."]
    assert notes[0] == "Классы сильно несбалансированы: в классе «Бигль» фотографий в 6,2 раза больше (31), чем в «Мопс» (5)."
    assert notes[1] == "Найдено 2 группы одинаковых файлов (2 лишние копии, из них в разных классах: 1)."
    assert reason == "слишком маленькое изображение"


def test_a_report_from_before_the_codes_keeps_its_english_sentences():
    old = {"problems": ["Found 1 class folder(s) with usable photos; at least two are needed."], "warnings": []}
    with translation.override("ru"):
        assert problem_sentences(old) == old["problems"] and warning_sentences(old) == []


def test_a_built_report_says_the_same_in_english_through_its_codes(tmp_path: Path):
    from PIL import Image

    for name, count in {"beagle": 31, "pug": 5}.items():
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("RGB", (80, 80), (i * 7 % 255, 90, 160 if name == "pug" else 20)).save(tmp_path / name / f"{i}.png")
    report = build_report(tmp_path)
    with translation.override("en"):
        assert warning_sentences(report) == [
            "The classes are heavily imbalanced: “Beagle” has 6.2 times as many photos (31) as “Pug” (5)."
        ]
    assert report["warnings"] == ["The classes are heavily imbalanced: 'beagle' has 31 photos, 6.2 times as many as 'pug' (5)."]


@pytest.mark.django_db
def test_the_russian_dataset_page_says_problems_warnings_and_skip_reasons_in_russian(client, make_dataset):
    report = {
        "problems": ["Found 1 class folder(s) with usable photos; at least two are needed."],
        "problem_items": [{"code": "few_classes", "found": 1}],
        "warnings": ["1 file(s) were skipped; see the list of skipped files for reasons."],
        "warning_items": [{"code": "skipped", "files": 1}],
        "skipped": [{"path": "pug/tiny.jpg", "reason": "tiny", "detail": "300x40: the shorter side is under 64 px"}],
        "classes": [{"name": "pug", "images": 6, "skipped": 1}],
    }
    dataset = make_dataset(name="broken", report=report)
    html = client.get(dataset.get_absolute_url(), headers={"accept-language": "ru"}).content.decode()
    assert "Найдена 1 папка класса с пригодными фотографиями" in html
    assert "Пропущен 1 файл;" in html and "слишком маленькое изображение" in html
    assert "file(s)" not in html and "folder(s)" not in html
    listing = client.get("/datasets/", headers={"accept-language": "ru"}).content.decode()
    assert 'title="Найдена 1 папка класса' in listing
