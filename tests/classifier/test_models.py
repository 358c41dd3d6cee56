import pytest
from django.db import IntegrityError, transaction

from classifier.models import EpochMetric, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def test_the_database_allows_at_most_one_active_model_version():
    ModelVersion.objects.update(is_active=False)  # the built-in model is active after migrate
    ModelVersion.objects.create(name="a", backbone="efficientnet_lite0", path="a", is_active=True)
    ModelVersion.objects.create(name="b", backbone="efficientnet_lite0", path="b", is_active=False)
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.create(name="c", backbone="efficientnet_lite0", path="c", is_active=True)
    assert ModelVersion.objects.filter(is_active=True).count() == 1


def test_an_epoch_metric_is_unique_per_run_phase_and_epoch(make_run):
    run = make_run()
    EpochMetric.objects.create(run=run, phase="head", epoch=1, val_acc=50.0)
    EpochMetric.objects.create(run=run, phase="finetune", epoch=1, val_acc=60.0)
    with pytest.raises(IntegrityError), transaction.atomic():
        EpochMetric.objects.create(run=run, phase="head", epoch=1, val_acc=70.0)


def test_a_new_run_is_queued_and_final_states_are_final(make_run):
    run = make_run()
    assert run.status == TrainingRun.Status.QUEUED and not run.is_final
    run.status = TrainingRun.Status.CANCELLED
    assert run.is_final
    assert run.backbone == "efficientnet_lite0" and run.optimizer == "adam"


def test_an_auto_run_names_its_network_from_its_plan_while_it_runs_and_from_its_results_after(make_run):
    from classifier.runs.display import run_backbone_text
    from classifier.runs.selectors import run_backbones, run_list

    run = make_run(config={"backbone": "auto"})
    assert run.backbone == "auto" and run_backbone_text(run) == "Automatic"
    run.status = TrainingRun.Status.RUNNING
    assert run.image_size is None
    run.progress_detail = {"stage": "plan", "plan": {"views": 4, "backbone": "efficientnet_lite2", "image_size": 300}}
    run.save()
    assert run.image_size == 300
    assert run.backbone == "efficientnet_lite2" and run_backbone_text(run) == "EfficientNet-Lite2 (chosen automatically)"
    assert list(run_list(backbone="efficientnet_lite2")) == [run] and "efficientnet_lite2" in run_backbones()
    run.result = {"metrics": {"backbone": "efficientnet_lite1"}}
    assert run.backbone == "efficientnet_lite1"


def test_a_dataset_used_by_a_run_cannot_be_deleted(make_run):
    from django.db.models import ProtectedError

    run = make_run()
    with pytest.raises(ProtectedError):
        run.dataset.delete()
