"""Numbers and their nouns agree in both languages: "1 epoch" / "2 epochs"; in Russian the three
forms of 1 / 2 / 5 (and 21 like 1): "1 эпоха", "2 эпохи", "5 эпох", "21 эпоха".

Through the real catalogue (locale/ru), the counted-noun filter, the run configuration's units and
the templates that print a count beside a noun.
"""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.utils import translation

from classifier.runs.display import config_groups
from classifier.web.templatetags.run_format import counted, plural_count, short_number

RUSSIAN = {
    "photo": {1: "1 фотография", 2: "2 фотографии", 5: "5 фотографий", 21: "21 фотография"},
    "breed": {1: "1 порода", 2: "2 породы", 5: "5 пород", 21: "21 порода"},
    "epoch": {1: "1 эпоха", 2: "2 эпохи", 5: "5 эпох", 21: "21 эпоха"},
}


@pytest.mark.parametrize("noun", ["photo", "breed", "epoch"])
def test_a_counted_noun_takes_the_english_singular_only_for_one(noun):
    with translation.override("en"):
        assert counted(1, noun) == f"1 {noun}"
        assert counted(2, noun) == f"2 {noun}s"
        assert counted(0, noun) == f"0 {noun}s"


@pytest.mark.parametrize("noun", sorted(RUSSIAN))
@pytest.mark.parametrize("n", [1, 2, 5, 21])
def test_a_counted_noun_takes_the_russian_form_of_1_2_5_and_21(noun, n):
    with translation.override("ru"):
        assert counted(n, noun) == RUSSIAN[noun][n]


def test_fractions_count_like_two_and_keep_the_languages_decimal_separator():
    assert plural_count(1.5) == 2 and plural_count(3.0) == 3 and plural_count(None) == 2
    with translation.override("en"):
        assert counted(1.5, "epoch") == "1.5 epochs"
    with translation.override("ru"):
        assert counted(1.5, "epoch") == "1,5 эпохи"


def _units(config: dict) -> dict[str, list[str]]:
    rows = [row for group in config_groups([config]) for row in group["rows"]]
    return {row["key"]: [f"{cell['text']} {cell['unit']}".strip() for cell in row["cells"]] for row in rows}


def test_the_run_configuration_units_agree_with_their_numbers_in_english():
    with translation.override("en"):
        one = _units({"head_epochs": 1, "finetune_epochs": 2, "batch_size": 1, "budget_minutes": 1, "unfreeze_blocks": 1})
        many = _units({"head_epochs": 5, "batch_size": 32, "budget_minutes": 2.5, "unfreeze_blocks": -1,
                       "early_stopping_patience": 1})
    assert one["head_epochs"] == ["1 epoch"] and one["finetune_epochs"] == ["2 epochs"]
    assert one["batch_size"] == ["1 photo"] and one["budget_minutes"] == ["1 minute"] and one["unfreeze_blocks"] == ["1 block"]
    assert many["head_epochs"] == ["5 epochs"] and many["batch_size"] == ["32 photos"]
    assert many["budget_minutes"] == ["2.5 minutes"]
    assert many["unfreeze_blocks"] == ["all"]  # a word, not a number: no unit after it
    assert many["early_stopping_patience"] == ["1 epoch without progress"]


@pytest.mark.parametrize(
    ("n", "epochs", "photos", "minutes"),
    [(1, "эпоха", "фотография", "минута"), (2, "эпохи", "фотографии", "минуты"), (5, "эпох", "фотографий", "минут"),
     (21, "эпоха", "фотография", "минута")],
)
def test_the_run_configuration_units_take_the_russian_form_of_their_number(n, epochs, photos, minutes):
    with translation.override("ru"):
        units = _units({"head_epochs": n, "batch_size": n, "budget_minutes": n})
    assert units == {"head_epochs": [f"{n} {epochs}"], "batch_size": [f"{n} {photos}"], "budget_minutes": [f"{n} {minutes}"]}


def _render(source: str, **context) -> str:
    return " ".join(Template("{% load i18n run_format %}" + source).render(Context(context)).split())


@pytest.mark.parametrize(
    ("language", "n", "expected"),
    [("en", 1, "fine-tuned for 1 epoch."), ("en", 2, "fine-tuned for 2 epochs."),
     ("ru", 1, "дообучаются 1 эпоху."), ("ru", 2, "дообучаются 2 эпохи."), ("ru", 5, "дообучаются 5 эпох."),
     ("ru", 21, "дообучаются 21 эпоху.")],
)
def test_the_run_plan_counts_its_epochs(language, n, expected):
    plan = {"finetune_epochs": n, "views": 1, "path": "features"}
    with translation.override(language):
        html = Template("{% include 'classifier/runs/_plan.html' %}").render(Context({"plan": plan}))
    assert expected in " ".join(html.split())


@pytest.mark.parametrize(
    ("language", "hours", "expected"),
    [("en", 1, "removed 1 hour later"), ("en", 24, "removed 24 hours later"), ("en", 1.5, "removed 1.5 hours later"),
     ("ru", 1, "через 1 час;"), ("ru", 2, "через 2 часа;"), ("ru", 5, "через 5 часов;"), ("ru", 21, "через 21 час;")],
)
def test_the_storage_page_counts_the_grace_hours(language, hours, expected):
    source = (
        '{% blocktranslate with hours=grace_hours|floatformat:"-1" count n=grace_hours|plural_count %}Deleting is soft: '
    )
    with open("templates/classifier/storage/storage.html", encoding="utf-8") as handle:
        line = next(line for line in handle if line.startswith('<p class="muted">{% blocktranslate with hours='))
    assert source in line  # the page's own sentence, rendered below
    with translation.override(language):
        assert expected in _render(line, grace_hours=hours)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("language", "count", "expected"),
    [("en", 1, "1 correction accepted."), ("en", 2, "2 corrections accepted."), ("ru", 1, "Принято 1 исправление."),
     ("ru", 2, "Принято 2 исправления."), ("ru", 5, "Принято 5 исправлений.")],
)
def test_the_admin_counts_the_accepted_corrections(staff_client, make_run, language, count, expected):
    from classifier.models import Feedback, ModelVersion, Prediction

    version = ModelVersion.objects.create(run=make_run(), name="v1", backbone="efficientnet_lite0", path="v1")
    ids = []
    for _ in range(count):
        prediction = Prediction.objects.create(model_version=version, top_label="beagle", top_score=0.9, is_dog=True)
        ids.append(Feedback.objects.create(prediction=prediction, correct_label="pug").pk)
    response = staff_client.post(
        "/admin/classifier/feedback/", {"action": "accept", "_selected_action": ids}, follow=True,
        headers={"accept-language": language},
    )
    assert response.status_code == 200
    assert expected in [str(message) for message in response.context["messages"]]


def test_learning_rates_read_with_the_languages_decimal_separator():
    with translation.override("en"):
        assert short_number(0.225) == "0.225" and short_number(0.020123) == "0.0201"
    with translation.override("ru"):
        assert short_number(0.225) == "0,225" and short_number(0.020123) == "0,0201"
