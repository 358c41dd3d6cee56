"""classifier.versions.services: registration, one-transaction promotion with the cache bump, rollback, promote-if-better."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.core.cache import cache

from classifier.models import ModelVersion, TrainingRun
from classifier.versions import selectors as version_selectors
from classifier.versions import services as version_services

pytestmark = pytest.mark.django_db


def version_with_files(settings, name: str, *, val_acc: float = 0.5, split_key: str = "k1", classes=("a", "b")) -> ModelVersion:
    folder = Path(settings.RUNS_ROOT) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "meta.json").write_text(json.dumps({"backbone": "cifar10_resnet20", "class_names": list(classes)}))
    return ModelVersion.objects.create(
        name=name, backbone="cifar10_resnet20", path=name, class_names=list(classes),
        metrics={"val_acc": val_acc, "split_key": split_key},
    )


def test_promotion_flips_the_active_version_and_announces_it_after_commit(
    settings, staff_user, django_capture_on_commit_callbacks
):
    old = version_with_files(settings, "old")
    new = version_with_files(settings, "new")
    version_services.model_promote(version=old)
    cache.delete(version_selectors.ACTIVE_MODEL_CACHE_KEY)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        version_services.model_promote(version=new, user=staff_user)
    assert cache.get(version_selectors.ACTIVE_MODEL_CACHE_KEY) is None  # not before the commit
    for callback in callbacks:
        callback()
    new.refresh_from_db()
    old.refresh_from_db()
    assert new.is_active and not old.is_active
    assert new.promoted_by == staff_user and new.promoted_at is not None
    assert cache.get(version_selectors.ACTIVE_MODEL_CACHE_KEY) == {"id": new.pk, "promoted_at": new.promoted_at.isoformat()}
    assert ModelVersion.objects.filter(is_active=True).count() == 1


def test_a_version_whose_files_are_missing_cannot_be_promoted(settings):
    ghost = ModelVersion.objects.create(name="ghost", backbone="x", path="gone")
    with pytest.raises(version_services.VersionError, match="missing"):
        version_services.model_promote(version=ghost)
    ghost.refresh_from_db()
    assert not ghost.is_active and ModelVersion.objects.get(is_active=True).is_builtin


def test_rollback_serves_the_previous_version_again(settings):
    first = version_with_files(settings, "first")
    second = version_with_files(settings, "second")
    version_services.model_promote(version=first)
    version_services.model_promote(version=second)
    assert version_services.model_rollback() == first
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.is_active and not second.is_active


def test_rollback_from_the_first_promoted_model_returns_to_the_builtin_one(settings):
    version_services.model_promote(version=version_with_files(settings, "only"))
    assert version_services.model_rollback().is_builtin


def test_rollback_without_an_earlier_version_is_refused(settings):
    ModelVersion.objects.filter(kind=ModelVersion.Kind.BUILTIN).delete()
    version_services.model_promote(version=version_with_files(settings, "only"))
    with pytest.raises(version_services.VersionError, match="nothing to roll back"):
        version_services.model_rollback()


def test_promote_if_better_replaces_the_builtin_model(settings):
    new = version_with_files(settings, "new")
    assert version_services.model_promote_if_better(version=new) == (True, "Only the built-in pretrained model was serving.")


def test_promote_if_better_promotes_when_nothing_is_active(settings):
    ModelVersion.objects.update(is_active=False)
    new = version_with_files(settings, "new")
    assert version_services.model_promote_if_better(version=new) == (True, "No model was active.")


def test_promote_if_better_compares_accuracies_on_the_same_split(settings):
    active = version_with_files(settings, "active", val_acc=0.8)
    version_services.model_promote(version=active)
    worse = version_with_files(settings, "worse", val_acc=0.7)
    better = version_with_files(settings, "better", val_acc=0.9)
    promoted, reason = version_services.model_promote_if_better(version=worse)
    assert not promoted and "does not beat" in reason
    promoted, reason = version_services.model_promote_if_better(version=better)
    assert promoted and "90.0%" in reason and "80.0%" in reason
    assert ModelVersion.objects.get(is_active=True) == better


def test_promote_if_better_refuses_models_of_other_classes(settings):
    version_services.model_promote(version=version_with_files(settings, "active", classes=("a", "b")))
    other = version_with_files(settings, "other", val_acc=1.0, classes=("a", "c"))
    promoted, reason = version_services.model_promote_if_better(version=other)
    assert not promoted and "other classes" in reason


def test_registering_a_run_twice_keeps_one_version(make_run, settings):
    run = make_run(status=TrainingRun.Status.SUCCEEDED)
    run.out_dir = "run-x"
    run.save()
    folder = Path(settings.RUNS_ROOT) / "run-x"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"backbone": "cifar10_resnet20", "class_names": ["a", "b"],
                                                  "metrics": {"val_acc": 0.75}}))
    first = version_services.model_register_from_run(run=run)
    assert version_services.model_register_from_run(run=run) == first
    assert first.val_acc == 0.75 and first.metrics["split_key"] and first.path == "run-x" and not first.is_active


def test_promote_if_better_evaluates_the_active_model_on_the_new_runs_split(tiny_dataset, stanford_dogs_dir, settings):
    """Same classes, another split: the active model is scored on the new run's validation photos."""
    from PIL import Image

    from classifier.runs import services as run_services
    from tests.classifier.run_fixtures import TINY_BREEDS, TINY_CONFIG, make_dataset_row
    from training.predict import Predictor

    def train(dataset, **fields):
        run = TrainingRun.objects.create(dataset=dataset, config=dict(TINY_CONFIG), **fields)
        run.out_dir = f"run-{run.pk}"
        run.save()
        assert run_services.run_execute(run_id=run.pk) == TrainingRun.Status.SUCCEEDED
        run.refresh_from_db()
        return run

    first = train(tiny_dataset)
    active = version_services.model_promote(version=ModelVersion.objects.get(run=first))

    other = Path(settings.DATASETS_ROOT) / "later" / "v1"  # other photos of the same breeds
    for breed in TINY_BREEDS:
        (other / breed).mkdir(parents=True)
        for photo in sorted((stanford_dogs_dir / breed).iterdir())[10:20]:
            (other / breed / photo.name).write_bytes(photo.read_bytes())
    second = train(make_dataset_row(other, "later/v1", name="later"), promote_when_done=True)

    predictor = Predictor.from_dir(Path(settings.RUNS_ROOT) / active.path)
    val = second.dataset.split["val"]
    answers = predictor.predict([Image.open(other / rel).convert("RGB") for rel in val], top_k=1)
    expected = sum(a[0][0] == rel.split("/")[0] for a, rel in zip(answers, val)) / len(val)
    promotion = second.result["promotion"]
    assert f"{expected:.1%}" in promotion["reason"] and str(active) in promotion["reason"]  # its display name
    new_acc = ModelVersion.objects.get(run=second).val_acc
    assert promotion["promoted"] is (new_acc > expected)
    assert ModelVersion.objects.get(is_active=True).run_id == (second.pk if new_acc > expected else first.pk)
