"""Run pages: list filters, the new-run form, the run page (live part, curves, matrix, gallery), compare, models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import Client

from classifier.models import EpochMetric, ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db
SPLIT = {"train": ["beagle/1.jpg", "pug/1.jpg"], "val": ["beagle/2.jpg", "pug/2.jpg", "pug/3.jpg"]}


@pytest.fixture
def finished_run(make_run, make_dataset, settings):
    """A succeeded run with epochs, a validation report on disk and a model version."""
    dataset = make_dataset(name="pets", split=SPLIT)
    run = make_run(dataset=dataset, status=TrainingRun.Status.SUCCEEDED, best_val_acc=0.667, progress=1.0,
                   config={"backbone": "cifar10_resnet20", "optimizer": "adam", "head_epochs": 1, "finetune_epochs": 1})
    run.out_dir = f"run-{run.pk}"
    run.save()
    EpochMetric.objects.create(run=run, phase="head", epoch=1, train_loss=1.25, train_acc=0.5, val_loss=1.1, val_acc=0.5)
    EpochMetric.objects.create(run=run, phase="finetune", epoch=1, train_loss=0.9, train_acc=0.7, val_loss=0.8, val_acc=0.667)
    folder = Path(settings.RUNS_ROOT) / run.out_dir
    folder.mkdir()
    report = {
        "top1": 0.667, "top5": 1.0, "n": 3, "classes": ["beagle", "pug"],
        "confusion_matrix": [[1, 0], [1, 1]],
        "per_class": {"beagle": {"precision": 0.5, "recall": 1.0, "f1": 0.667, "support": 1},
                      "pug": {"precision": 1.0, "recall": 0.5, "f1": 0.667, "support": 2}},
        "predictions": [
            {"path": "beagle/2.jpg", "true": "beagle", "pred": "beagle", "confidence": 0.9, "correct": True},
            {"path": "pug/2.jpg", "true": "pug", "pred": "beagle", "confidence": 0.6, "correct": False},
            {"path": "pug/3.jpg", "true": "pug", "pred": "pug", "confidence": 0.8, "correct": True},
        ],
    }
    (folder / "validation.json").write_text(json.dumps(report))
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "meta.json").write_text("{}")
    ModelVersion.objects.create(run=run, name="pets-v1-run", backbone="cifar10_resnet20", path=run.out_dir,
                                class_names=["beagle", "pug"], metrics={"val_acc": 0.667})
    return run


# ---- the list -----------------------------------------------------------------------------------
def test_the_run_list_filters_by_backbone_and_dataset_and_keeps_filters_across_pages(client, make_run, make_dataset):
    a = make_dataset(name="a")
    b = make_dataset(name="b")
    resnet = make_run(dataset=a, config={"backbone": "cifar10_resnet20", "optimizer": "sgd"})
    lite = make_run(dataset=b, config={"backbone": "efficientnet_lite0", "optimizer": "adam"})
    html = client.get("/runs/?backbone=cifar10_resnet20").content.decode()
    assert f'href="/runs/{resnet.pk}/"' in html and f'href="/runs/{lite.pk}/"' not in html
    html = client.get(f"/runs/?dataset={b.pk}").content.decode()
    assert f'href="/runs/{lite.pk}/"' in html and f'href="/runs/{resnet.pk}/"' not in html
    for _ in range(26):
        make_run(dataset=a, config={"backbone": "cifar10_resnet20"})
    html = client.get("/runs/?backbone=cifar10_resnet20").content.decode()
    assert "?backbone=cifar10_resnet20&amp;page=2" in html


def test_running_runs_show_a_progress_bar_and_the_table_refreshes_itself(client, make_run):
    make_run(status=TrainingRun.Status.RUNNING, progress=0.42)
    html = client.get("/runs/").content.decode()
    assert '<progress max="1" value="0.42"' in html
    assert 'hx-trigger="every 5s' in html and "/static/js/htmx.min.js" in html


# ---- the form -----------------------------------------------------------------------------------
def test_the_form_offers_the_registry_the_optimizers_and_the_recipe_defaults(staff_client, make_dataset):
    from training.config import TrainConfig

    make_dataset(name="pets", split=SPLIT)
    html = staff_client.get("/runs/new/").content.decode()
    defaults = TrainConfig(data_dir=".")
    assert 'value="cifar10_resnet20"' in html and "weights" in html
    for name in ("sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"):
        assert f'value="{name}"' in html
    assert f'name="head_epochs" value="{defaults.head_epochs}"' in html
    assert f'name="batch_size" value="{defaults.batch_size}"' in html
    assert 'id="recipe-rates"' in html and "/static/js/run_form.js" in html


def test_the_form_starts_a_run_and_shows_it(staff_client, make_dataset, enqueued, django_capture_on_commit_callbacks,
                                            tiny_weights):
    dataset = make_dataset(name="pets", split=SPLIT)
    data = {
        "dataset": dataset.pk, "backbone": "cifar10_resnet20", "optimizer": "rmsprop", "head_epochs": 2, "budget_minutes": 2,
        "head_solver": "epochs",
        "head_lr": 0.001, "finetune_epochs": 1, "finetune_lr": 0.0005, "unfreeze_blocks": 1, "batch_size": 16,
        "image_size": 32, "augmentation": "none", "early_stopping_patience": 0, "seed": 7, "schedule": "cosine",
        "weight_decay": 0.0, "backbone_lr_mult": 0.1, "label_smoothing": 0.0, "mixup": 0.4, "head_dropout": 0.0,
        "promote_when_done": "on",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/runs/new/", data)
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.config["optimizer"] == "rmsprop" and run.config["seed"] == 7 and run.config["image_size"] == 32
    assert run.config["budget_minutes"] == 2 and run.config["head_solver"] == "epochs" and run.config["finetune_epochs"] == 1
    assert run.config["mixup"] == 0.4
    assert run.promote_when_done and run.created_by.username == "staff"
    assert [call["args"] for call in enqueued] == [[run.pk]]


def test_the_form_starts_on_the_automatic_network_listed_first(staff_client, make_dataset):
    make_dataset(name="pets", split=SPLIT)
    html = staff_client.get("/runs/new/").content.decode()
    select = html.split('name="backbone"')[1].split("</select>")[0]
    assert re.findall(r'<option value="([^"]+)"', select)[0] == "auto"
    assert '<option value="auto" selected>Automatic: the strongest EfficientNet-Lite that fits the time budget</option>' in select
    russian = staff_client.get("/runs/new/", headers={"accept-language": "ru"}).content.decode()
    assert "Автоматический выбор: самая точная из EfficientNet-Lite0/1/2" in russian


def test_the_form_with_the_automatic_network_creates_a_run_whose_config_says_auto(
    staff_client, make_dataset, enqueued, django_capture_on_commit_callbacks
):
    from classifier.runs.forms import CONFIG_FIELDS, RunForm

    dataset = make_dataset(name="pets", split=SPLIT, image_count=100)
    form = RunForm()
    data = {name: "" if form[name].value() is None else form[name].value() for name in CONFIG_FIELDS}
    assert data["backbone"] == "auto"  # the form's initial values, posted as they are
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/runs/new/", {**data, "dataset": dataset.pk})
    run = TrainingRun.objects.get()
    assert response.status_code == 302 and run.config["backbone"] == "auto" and run.backbone_auto
    assert [call["args"] for call in enqueued] == [[run.pk]]
    # The time limit counts the largest candidate (EfficientNet-Lite2, 260 px).
    from classifier.runs.config import time_limit_seconds

    assert enqueued[0]["soft_time_limit"] == time_limit_seconds(run.config, image_count=100)
    html = staff_client.get(run.get_absolute_url()).content.decode()
    assert "Automatic" in html.split("<h1>")[1].split("</h1>")[0]  # queued: not chosen yet


def test_without_efficientnet_lite_weights_automatic_cannot_be_chosen(staff_client, make_dataset, monkeypatch):
    import dataclasses

    from classifier.runs import config as runconfig

    infos = [dataclasses.replace(info, weights_available=not info.name.startswith("efficientnet_lite"))
             for info in runconfig.backbone_choices()]
    monkeypatch.setattr(runconfig, "backbone_choices", lambda: infos)
    dataset = make_dataset(name="pets", split=SPLIT)
    html = staff_client.get("/runs/new/").content.decode()
    assert '<option value="auto" selected disabled>' in html or '<option value="auto" disabled selected>' in html
    response = staff_client.post("/runs/new/", {"dataset": dataset.pk, "backbone": "auto", "optimizer": "adam"})
    assert "pretrained weights are not installed on this server" in response.content.decode()
    assert not TrainingRun.objects.exists()


@pytest.fixture
def auto_runs(make_run, make_dataset):
    """Two runs configured with backbone "auto": one finished (its results name EfficientNet-Lite2), one queued."""
    config = {"backbone": "auto", "optimizer": "adamw"}
    done = make_run(dataset=make_dataset(name="lite", split=SPLIT), config=config, status=TrainingRun.Status.SUCCEEDED,
                    best_val_acc=0.9, progress=1.0,
                    result={"metrics": {"val_acc": 0.9, "backbone": "efficientnet_lite2", "image_size": 260}})
    waiting = make_run(dataset=make_dataset(name="queued", split=SPLIT), config=config)
    return done, waiting


def test_a_finished_automatic_run_shows_the_network_it_chose(client, auto_runs):
    done, waiting = auto_runs
    html = client.get(done.get_absolute_url()).content.decode()
    assert "EfficientNet-Lite2 (chosen automatically)" in html.split("<h1>")[1].split("</h1>")[0]
    assert html.count("EfficientNet-Lite2 (chosen automatically)") == 2  # the heading and the configuration table
    assert done.config["backbone"] == "auto" and done.backbone == "efficientnet_lite2"
    listing = client.get("/runs/").content.decode()
    assert "EfficientNet-Lite2 (chosen automatically)" in listing and ">Automatic</td>" in listing
    russian = client.get(done.get_absolute_url(), headers={"accept-language": "ru"}).content.decode()
    assert "EfficientNet-Lite2 (выбрана автоматически)" in russian
    assert "Автоматический выбор" in client.get("/runs/", headers={"accept-language": "ru"}).content.decode()


def test_an_automatic_run_shows_the_input_size_it_chose(client, auto_runs):
    done, waiting = auto_runs
    for run in auto_runs:  # a stored configuration names every setting; image_size None: auto chooses
        run.config = {**run.config, "image_size": None}
    done.result = {"metrics": {**done.result["metrics"], "image_size": 300}}
    done.save()
    waiting.save()
    html = client.get(done.get_absolute_url()).content.decode()
    assert "300 px, chosen automatically" in html and "the network&#x27;s own" not in html
    assert "300 пикс., выбран автоматически" in client.get(done.get_absolute_url(), headers={"accept-language": "ru"}).content.decode()
    assert "the network&#x27;s own" in client.get(waiting.get_absolute_url()).content.decode()  # not chosen yet


def test_the_run_list_filters_automatic_runs_by_their_choice(client, auto_runs, make_run):
    done, waiting = auto_runs
    lite0 = make_run(config={"backbone": "efficientnet_lite0", "optimizer": "adam"})
    html = client.get("/runs/?backbone=efficientnet_lite2").content.decode()
    assert f'href="/runs/{done.pk}/"' in html and f'href="/runs/{waiting.pk}/"' not in html
    html = client.get("/runs/?backbone=auto").content.decode()
    assert f'href="/runs/{done.pk}/"' in html and f'href="/runs/{waiting.pk}/"' in html
    assert f'href="/runs/{lite0.pk}/"' not in html
    # The filter offers "Automatic" and the networks runs used, the chosen one included.
    assert '<option value="auto" selected>Automatic</option>' in html and '<option value="efficientnet_lite2"' in html


def test_compare_names_the_network_each_automatic_run_chose(client, auto_runs, finished_run):
    done, waiting = auto_runs
    html = client.get(f"/runs/compare/?ids={done.pk},{waiting.pk},{finished_run.pk}").content.decode()
    row = html.split('<th scope="row">backbone</th>')[1].split("</tr>")[0]
    assert row == "<td>EfficientNet-Lite2 (chosen automatically)</td><td>Automatic</td><td>ResNet-20 (CIFAR-10)</td>"
    assert '<tr class="differs"><th scope="row">Pretrained network<small' in html


def test_the_form_explains_invalid_input_and_a_blocked_dataset(staff_client, make_dataset, enqueued):
    dataset = make_dataset(name="pets", split=SPLIT, report={"problems": ["Class pug has only 2 usable images."]})
    response = staff_client.post("/runs/new/", {"dataset": dataset.pk, "backbone": "cifar10_resnet20",
                                                "optimizer": "adam", "head_epochs": -3, "batch_size": 0})
    html = response.content.decode()
    assert response.status_code == 200
    assert "Class pug has only 2 usable images." in html
    assert "Ensure this value is greater than or equal to 0." in html
    assert not TrainingRun.objects.exists() and enqueued == []


def test_the_form_shows_numbers_as_a_person_types_them(staff_client, finished_run):
    TrainingRun.objects.filter(pk=finished_run.pk).update(
        config={**finished_run.config, "budget_minutes": 5.0, "finetune_lr": 0.0029999999999999996}
    )
    html = staff_client.get(f"/runs/new/?from={finished_run.pk}").content.decode()
    assert re.search(r'name="budget_minutes" value="5"', html), "5.0 minutes shows as 5"
    assert re.search(r'name="finetune_lr" value="0.003"', html), "binary noise is not shown"


def test_the_form_copies_a_run_to_edit_and_run_again(staff_client, finished_run):
    html = staff_client.get(f"/runs/new/?from={finished_run.pk}").content.decode()
    assert 'value="adam" selected' in html


# ---- the run page ---------------------------------------------------------------------------------
def test_the_run_page_shows_results_matrix_links_gallery_and_config(client, finished_run, settings):
    settings.BREEDLAB_PUBLIC_DATASET_IMAGES = True  # photos are staff-only otherwise (see below)
    html = client.get(finished_run.get_absolute_url()).content.decode()
    assert "<svg" in html  # the confusion matrix, inline so its cells are links
    assert f'/runs/{finished_run.pk}/validation/?true=pug&amp;amp;pred=beagle' in html or \
        f'/runs/{finished_run.pk}/validation/?true=pug&amp;pred=beagle' in html
    assert f"/datasets/{finished_run.dataset_id}/thumbs/pug/2.jpg" in html  # the misclassified photo
    assert f"/runs/{finished_run.pk}/curves.svg?n=2" in html
    assert "66.7%" in html and "ResNet-20 (CIFAR-10)" in html  # the network by its name, not its key
    assert "cifar10_resnet20" not in html.split("<main")[1]
    assert "Cancel" not in html.split("<main")[1].split("<h2")[0]  # no buttons for visitors


def test_the_run_page_shows_the_calibrated_thresholds_or_why_there_are_none(client, finished_run):
    finished_run.result = {"calibration": {
        "thresholds": {"dog_mass": 0.4321, "confidence": 0.2468},
        "validation": {"n": 3, "not_dog_rate": 0.0, "not_sure_rate": 1 / 3, "top1_when_named": 1.0},
    }}
    finished_run.save()
    html = client.get(finished_run.get_absolute_url()).content.decode()
    assert "thresholds 0.432 (dog-class mass) and 0.247 (confidence)" in html and "33.3% “not sure”" in html
    finished_run.result = {"calibration": {"error": "CalibrationError: no photos"}}
    finished_run.save()
    html = client.get(finished_run.get_absolute_url()).content.decode()
    assert "default thresholds (the calibration failed: CalibrationError: no photos)" in html


def test_staff_see_the_buttons_and_the_traceback_of_a_failed_run(staff_client, make_run):
    run = make_run(status=TrainingRun.Status.FAILED, error="Non-finite loss: nan", traceback="Traceback (most recent call last): X")
    staff_html = staff_client.get(run.get_absolute_url()).content.decode()
    assert "Non-finite loss: nan" in staff_html and "Traceback (most recent call last): X" in staff_html
    assert f'action="/runs/{run.pk}/rerun/"' in staff_html
    visitor_html = Client().get(run.get_absolute_url()).content.decode()
    assert "Non-finite loss: nan" in visitor_html and "Traceback (most recent call last)" not in visitor_html


def test_the_live_part_polls_while_running_and_reloads_the_page_when_the_run_ends(client, make_run):
    run = make_run(status=TrainingRun.Status.RUNNING, attempts=1, progress=0.5,
                   progress_detail={"stage": "train", "phase": "finetune", "epoch": 2, "epochs": 3, "batch": 5,
                                    "batches": 10, "loss": 0.5, "eta_seconds": 125})
    html = client.get(f"/runs/{run.pk}/live/?was=running").content.decode()
    assert 'hx-trigger="every 2s"' in html and "2 / 3" in html and "5 / 10" in html and "2 min 05 s" in html
    TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.SUCCEEDED)
    response = client.get(f"/runs/{run.pk}/live/?was=running")
    assert response["HX-Refresh"] == "true" and "hx-trigger" not in response.content.decode()


def test_the_curves_are_an_svg_with_the_unfreeze_switch_marked(client, finished_run):
    response = client.get(f"/runs/{finished_run.pk}/curves.svg?n=2")
    assert response["Content-Type"] == "image/svg+xml"
    svg = response.content.decode()
    assert svg.startswith("<svg") and "unfreeze" in svg
    stacked = client.get(f"/runs/{finished_run.pk}/curves.svg?n=2&layout=stacked").content.decode()
    assert stacked.startswith("<svg") and stacked != svg  # the phone's drawing, one panel above the other
    html = client.get(finished_run.get_absolute_url()).content.decode()
    assert f'<source media="(max-width: 600px)" srcset="/runs/{finished_run.pk}/curves.svg?n=2&amp;layout=stacked"' in html


def test_anonymous_visitors_see_no_broken_thumbnails_of_staff_only_photos(client, finished_run):
    for url in (finished_run.get_absolute_url(), f"/runs/{finished_run.pk}/validation/?true=pug"):
        html = client.get(url).content.decode()
        assert "/thumbs/" not in html and "Photos are shown to staff only." in html


def test_the_validation_page_lists_the_images_of_a_matrix_cell(client, finished_run, settings):
    settings.BREEDLAB_PUBLIC_DATASET_IMAGES = True
    html = client.get(f"/runs/{finished_run.pk}/validation/?true=pug&pred=beagle").content.decode()
    assert "pug/2.jpg" in html and "pug/3.jpg" not in html and "beagle/2.jpg" not in html


# ---- compare and models ---------------------------------------------------------------------------
def test_compare_overlays_curves_and_marks_differing_settings(client, finished_run, make_run):
    other = make_run(config={**finished_run.config, "optimizer": "sgd"})
    EpochMetric.objects.create(run=other, phase="head", epoch=1, train_loss=2.0, val_loss=1.9, val_acc=0.3)
    html = client.get(f"/runs/compare/?ids={finished_run.pk},{other.pk}").content.decode()
    assert "<svg" in html and f"#{finished_run.pk} Adam" in html and f"#{other.pk} SGD" in html
    # Two drawings: side by side, and one panel above the other for a phone (the page's CSS picks one).
    assert html.count('<div class="chart chart-wide"><svg') == 1 and html.count('<div class="chart chart-stacked"><svg') == 1
    # Settings in people's words: the differing optimizer is marked, the shared network is not.
    assert '<tr class="differs"><th scope="row">Optimizer<small' in html
    assert '<tr><th scope="row">Pretrained network<small' in html


def test_compare_needs_two_runs(client, finished_run):
    response = client.get(f"/runs/compare/?ids={finished_run.pk},999")
    assert response.status_code == 400 and "at least two runs" in response.content.decode()


def test_staff_promote_from_the_models_page(staff_client, finished_run):
    version = ModelVersion.objects.get(run=finished_run)
    html = staff_client.get("/models/").content.decode()
    assert f'action="/models/{version.pk}/promote/"' in html
    response = staff_client.post(f"/models/{version.pk}/promote/")
    assert response.status_code == 302
    version.refresh_from_db()
    assert version.is_active


def test_the_admin_links_to_the_new_run_form(staff_client, make_dataset):
    html = staff_client.get("/admin/classifier/trainingrun/").content.decode()
    assert 'href="/runs/new/"' in html
    dataset = make_dataset(name="pets", split=SPLIT)
    response = staff_client.post("/admin/classifier/dataset/", {"action": "start_training_run", "_selected_action": [dataset.pk]})
    assert response.status_code == 302 and response["Location"] == f"/runs/new/?dataset={dataset.pk}"


def test_the_navigation_offers_a_new_run_to_staff_only(staff_client):
    assert 'href="/runs/new/"' in staff_client.get("/runs/").content.decode()
    assert 'href="/runs/new/"' not in Client().get("/runs/").content.decode()


def test_the_run_page_shows_test_accuracy_the_head_alone_the_kept_weights_and_the_plan(finished_run, client):
    plan = {"path": "cached", "views": 8, "finetune_epochs": 10, "unfreeze_blocks": 2, "budget_s": 300.0,
            "estimates": {"decode": 4.0, "features": 75.0, "head": 5.0, "finetune": 12.0, "test": 0.1},
            "over_budget": False, "reason": "", "total_s": 96.1}
    finished_run.result = {"metrics": {"val_acc": 0.667, "test_acc": 0.9907, "test_top5": 1.0, "test_images": 108,
                                       "head_test_acc": 0.9815, "finetune_gain_test": 0.0092,
                                       "kept": {"phase": "finetune", "epoch": 10, "why": "last epoch of the plan"}},
                           "plan": plan}
    finished_run.save()
    html = client.get(f"/runs/{finished_run.pk}/").content.decode()
    assert "Test accuracy (top-1)" in html and "99.1%" in html and "108 test photos" in html
    assert "98.2%" in html and "fine-tuning gained +0.9 points" in html
    assert "Weights kept" in html and "epoch 10" in html
    assert "8 views" in html and "10 epochs" in html and "1 min 36 s" in html
    api = client.get(f"/api/runs/{finished_run.pk}").json()
    assert api["metrics"]["kept"]["phase"] == "finetune" and api["plan"]["views"] == 8


def test_the_live_page_shows_the_plan_and_an_eta_for_the_whole_run(make_run, client):
    plan = {"path": "cached", "views": 4, "finetune_epochs": 6, "budget_s": 300.0, "estimates": {"finetune": 30.0},
            "over_budget": False, "total_s": 200.0}
    run = make_run(status=TrainingRun.Status.RUNNING, progress=0.3,
                   progress_detail={"stage": "features", "stages": [], "plan": plan, "eta_total_seconds": 125.0})
    html = client.get(f"/runs/{run.pk}/live/").content.decode()
    assert "4 views" in html and "6 epochs" in html and "About 2 min 05 s left in all." in html


def test_the_run_page_says_which_precision_serves_and_why(client, finished_run):
    numbers = {"held_out_photos": 160, "top1_agreement": 0.99375, "accuracy_fp32": 0.975, "accuracy_int8": 0.96875}
    finished_run.result = {"calibration": {"int8": {"accepted": True, **numbers, "top1_agreement": 1.0, "accuracy_int8": 0.975}}}
    finished_run.save()
    html = client.get(finished_run.get_absolute_url()).content.decode()
    assert "int8: its top-1 agrees with fp32 on 100.0% of 160 held-out photos; accuracy 97.5% (fp32) → 97.5% (int8)" in html
    finished_run.result = {"calibration": {"int8": {"accepted": False, **numbers}}}
    finished_run.save()
    html = client.get(finished_run.get_absolute_url()).content.decode()
    assert "fp32: the int8 graph’s top-1 agrees with fp32 on 99.4% of 160 held-out photos, accuracy 97.5% → 96.9%" in html
    finished_run.result = {"calibration": {"int8": {"accepted": False, "reason": "only 16 held-out photos can be read"}}}
    finished_run.save()
    html = client.get(finished_run.get_absolute_url()).content.decode()
    assert "fp32 (no int8 graph: only 16 held-out photos can be read)" in html
