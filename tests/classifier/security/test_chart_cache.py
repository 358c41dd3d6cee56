"""Charts are drawn once per run and content, then served from the cache (issue 13, bullet 5)."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from classifier.models import EpochMetric, TrainingRun
from classifier.runs import charts


@pytest.fixture
def draws(monkeypatch):
    cache.clear()
    counts = {"curves": 0, "compare": 0, "confusion": 0}
    for kind in counts:
        original = getattr(charts, f"{kind}_svg")

        def counting(*args, _kind=kind, _original=original, **kwargs):
            counts[_kind] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(charts, f"{kind}_svg", counting)
    yield counts
    cache.clear()


def _run(make_run, **kwargs) -> TrainingRun:
    run = make_run(status=TrainingRun.Status.RUNNING, **kwargs)
    EpochMetric.objects.create(run=run, phase="head", epoch=1, train_loss=1.2, train_acc=0.5, val_loss=1.1, val_acc=0.5)
    return run


def test_curves_are_drawn_once_and_redrawn_when_the_run_changes(client, make_run, draws):
    run = _run(make_run)
    first = client.get(f"/runs/{run.pk}/curves.svg")
    second = client.get(f"/runs/{run.pk}/curves.svg")
    assert first.status_code == second.status_code == 200 and first.content == second.content
    assert draws["curves"] == 1
    EpochMetric.objects.create(run=run, phase="head", epoch=2, train_loss=0.9, train_acc=0.6, val_loss=1.0, val_acc=0.6)
    third = client.get(f"/runs/{run.pk}/curves.svg")
    assert draws["curves"] == 2 and third.content != first.content
    # The phone's stacked drawing is its own, drawn once as well.
    stacked = client.get(f"/runs/{run.pk}/curves.svg?layout=stacked")
    client.get(f"/runs/{run.pk}/curves.svg?layout=stacked")
    assert draws["curves"] == 3 and stacked.content != third.content


def test_compare_is_drawn_once_per_id_set(client, make_run, draws):
    a, b, c = _run(make_run), _run(make_run), _run(make_run)
    # Two drawings per id set: side by side, and stacked for phones.
    for _ in range(3):
        assert client.get(f"/runs/compare/?ids={a.pk},{b.pk}").status_code == 200
    assert draws["compare"] == 2
    assert client.get(f"/runs/compare/?ids={a.pk},{c.pk}").status_code == 200
    assert draws["compare"] == 4


def test_each_language_gets_its_own_drawing(client, make_run, draws):
    run = _run(make_run)
    client.get(f"/runs/{run.pk}/curves.svg")
    client.get(f"/runs/{run.pk}/curves.svg", HTTP_ACCEPT_LANGUAGE="ru")
    assert draws["curves"] == 2
