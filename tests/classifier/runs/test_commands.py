"""manage.py finetune (the form's options from the shell) and its --wait progress."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from classifier.models import TrainingRun
from classifier.runs import services as run_services

pytestmark = pytest.mark.django_db
SPLIT = {"train": ["a/1.jpg"], "val": ["a/2.jpg"]}


def test_it_queues_a_run_with_the_given_options_and_recipe_defaults(make_dataset, enqueued, capsys, staff_user,
                                                                    django_capture_on_commit_callbacks, tiny_weights):
    dataset = make_dataset(name="pets", split=SPLIT)
    with django_capture_on_commit_callbacks(execute=True):
        call_command("finetune", "--dataset", "pets", "--optimizer", "adagrad", "--head-epochs", "4",
                     "--backbone", "cifar10_resnet20", "--image-size", "32", "--user", "staff", "--promote-when-done")
    run = TrainingRun.objects.get()
    assert f"Run #{run.pk} queued on {dataset}" in capsys.readouterr().out
    assert run.config["optimizer"] == "adagrad" and run.config["head_epochs"] == 4 and run.config["image_size"] == 32
    from training.config import recipe_lrs

    assert (run.config["head_lr"], run.config["finetune_lr"]) == pytest.approx(recipe_lrs("adagrad"))
    assert run.promote_when_done and run.created_by == staff_user
    assert [c["args"] for c in enqueued] == [[run.pk]]


def test_without_backbone_the_command_queues_an_automatic_run(make_dataset, enqueued, capsys):
    dataset = make_dataset(name="pets", split=SPLIT)
    call_command("finetune", "--dataset", "pets")
    run = TrainingRun.objects.get()
    assert run.config["backbone"] == "auto"
    assert f"Run #{run.pk} queued on {dataset} (auto, adamw)." in capsys.readouterr().out
    call_command("finetune", "--dataset", "pets", "--backbone", "auto")
    assert TrainingRun.objects.latest("id").config["backbone"] == "auto"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "nope"], "No dataset 'nope'"),
        (["--dataset", "pets", "--head-epochs", "-2"], "--head-epochs: Ensure this value is greater than or equal to 0."),
        (["--dataset", "pets", "--head-solver", "epochs", "--head-epochs", "0", "--finetune-epochs", "0"], "At least one of head_epochs"),
        (["--dataset", "pets", "--user", "ghost"], "No user 'ghost'"),
    ],
)
def test_bad_options_are_one_line_and_exit_code_2(make_dataset, args, message):
    make_dataset(name="pets", split=SPLIT)
    with pytest.raises(CommandError, match=message) as info:
        call_command("finetune", *args)
    assert info.value.returncode == 2 and "\n" not in str(info.value)
    assert not TrainingRun.objects.exists()


@pytest.mark.django_db(transaction=True)  # on_commit runs at once, as in production
def test_wait_follows_the_run_to_its_end_and_fails_with_its_error(make_dataset, monkeypatch, capsys, tiny_weights):
    make_dataset(name="pets", split=SPLIT)

    def worker_that_fails(*, run_id):
        TrainingRun.objects.filter(pk=run_id).update(status="failed", error="Non-finite loss: nan")

    monkeypatch.setattr(run_services, "run_enqueue", worker_that_fails)
    with pytest.raises(CommandError, match="failed: Non-finite loss: nan") as info:
        call_command("finetune", "--dataset", "pets", "--wait", "--poll", "0.2", "--backbone", "cifar10_resnet20")
    assert info.value.returncode == 1
