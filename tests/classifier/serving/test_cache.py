"""classifier.serving.engine / classifier.serving.cache: the fast path equals eager torch; versions swap safely."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from classifier.models import ModelVersion
from classifier.serving import cache as inference
from classifier.serving import engine as serving
from classifier.serving.calibration import DEFAULT_THRESHOLDS, DOG, NOT_DOG, NOT_SURE, Thresholds, choose_thresholds

pytestmark = pytest.mark.usefixtures("fresh_serving")


def _photos(held_out_photos, n=2):
    return [Image.open(p).convert("RGB") for paths in held_out_photos.values() for p in paths[:n]]


def test_the_serving_path_answers_like_eager_torch_within_the_tolerance(finetuned_run, held_out_photos, tmp_path):
    model = serving.build_serving(finetuned_run, cache_dir=tmp_path, threads=1)
    assert model.engine == "onnxruntime"
    batch = model.preprocess(_photos(held_out_photos))
    fast, eager = model.forward(batch), model.eager_forward(batch)
    assert np.abs(fast.fine - eager.fine).max() <= serving.TOLERANCE
    assert np.abs(fast.base - eager.base).max() <= serving.TOLERANCE
    # The head-only model shares every backbone stage with the pretrained network: one forward pass.
    assert model.details["shared_stages"] == model.details["stages"]


def test_the_fine_tuned_branch_equals_the_training_predictor(finetuned_run, held_out_photos, tmp_path):
    from training.predict import Predictor

    photos = _photos(held_out_photos, 1)
    model = serving.build_serving(finetuned_run, cache_dir=tmp_path, threads=1)
    expected = Predictor.from_dir(finetuned_run).probabilities(photos).numpy()
    assert np.abs(model.classify(photos).fine - expected).max() <= serving.TOLERANCE


def test_the_before_branch_equals_the_pretrained_network_with_its_own_head(finetuned_run, held_out_photos, tmp_path):
    from training.backbones import get_backbone

    model = serving.build_serving(finetuned_run, cache_dir=tmp_path, threads=1)
    batch = model.preprocess(_photos(held_out_photos, 1))
    with torch.no_grad():
        expected = torch.softmax(get_backbone("efficientnet_lite0").build(pretrained=True)(batch), dim=1).numpy()
    assert np.abs(model.forward(batch).base - expected).max() <= serving.TOLERANCE
    assert len(model.base_class_names) == 1000 and len(model.dog_indices) == 118


def test_an_export_that_differs_from_eager_torch_is_refused_for_eager_torch(finetuned_run, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(serving, "TOLERANCE", -1.0)
    with caplog.at_level(logging.WARNING, logger="classifier.serving.engine"):
        model = serving.build_serving(finetuned_run, cache_dir=tmp_path, threads=1)
    assert model.engine == "torch" and model.session is None
    assert "differs from eager PyTorch" in caplog.text


def test_the_pretrained_model_alone_answers_in_imagenet_classes(held_out_photos, tmp_path):
    model = serving.build_serving(None, backbone="efficientnet_lite0", cache_dir=tmp_path, threads=1)
    out = model.classify(_photos(held_out_photos, 1))
    assert out.fine is None and out.base.shape == (4, 1000)
    assert (model.dog_mass(out.base) > 0.5).mean() >= 0.75


def test_gradcam_gives_a_normalised_map_over_the_last_feature_map(finetuned_run, held_out_photos, tmp_path):
    model = serving.build_serving(finetuned_run, cache_dir=tmp_path, threads=1)
    cam, target = model.gradcam(_photos(held_out_photos, 1)[0])
    assert cam.shape == (7, 7) and 0.0 <= cam.min() and cam.max() == pytest.approx(1.0)
    assert target == 0  # the beagle photo is explained as the beagle class


def test_it_serves_the_active_version_and_swaps_when_another_is_promoted(finetuned_run, perturbed_run, register_version):
    a = register_version(finetuned_run, name="a")
    assert inference.get_active().version_id == a.pk
    b = register_version(perturbed_run, name="b")
    loaded = inference.get_active()
    assert loaded.version_id == b.pk and loaded.name == "b"


def test_a_checkpoint_that_fails_to_load_is_refused_and_the_old_model_keeps_serving(
    finetuned_run, register_version, tmp_path, caplog
):
    good = register_version(finetuned_run, name="good")
    assert inference.get_active().version_id == good.pk
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text((finetuned_run / "meta.json").read_text())
    (broken / "model.safetensors").write_bytes((finetuned_run / "model.safetensors").read_bytes()[:1000])
    bad = register_version(broken, name="bad")
    with caplog.at_level(logging.ERROR, logger="classifier.serving.cache"):
        loaded = inference.get_active()
    assert loaded.version_id == good.pk
    assert f"refusing model version {bad.pk}" in caplog.text and f"version {good.pk} keeps serving" in caplog.text
    # Refused once, not retried on every request.
    caplog.clear()
    assert inference.get_active().version_id == good.pk
    assert "refusing" not in caplog.text


def test_with_no_loadable_model_it_says_so(finetuned_run, register_version, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "meta.json").write_text((finetuned_run / "meta.json").read_text())
    (empty / "model.safetensors").write_bytes(b"not safetensors")
    register_version(empty, name="empty")
    with pytest.raises(inference.ModelUnavailable, match="cannot be loaded"):
        inference.get_active()


def test_with_no_active_version_it_says_so(db):
    ModelVersion.objects.filter(kind="builtin").delete()  # a database without even the built-in model
    with pytest.raises(inference.ModelUnavailable, match="No model version exists"):
        inference.get_active()


def test_warm_up_loads_the_active_version_before_any_request(finetuned_run, register_version, monkeypatch):
    version = register_version(finetuned_run, name="warm")
    assert inference._state.current is None
    assert inference.warm_up().startswith(f"warmed up model version {version.pk} (warm) in ")
    assert inference._state.current.version_id == version.pk
    monkeypatch.setattr(inference, "_load", lambda key: pytest.fail("the first request must not load again"))
    assert inference.get_active().version_id == version.pk


def test_warm_up_loads_the_pretrained_model_while_none_is_active(db, monkeypatch):
    ModelVersion.objects.filter(kind="builtin").delete()  # a database without even the built-in model
    class Base:
        answered = []

        def classify(self, images):
            self.answered.extend(images)

    monkeypatch.setattr(inference, "get_base", lambda backbone=None: Base())
    assert "the pretrained efficientnet_lite0 (No model version exists" in inference.warm_up()
    assert len(Base.answered) == 1  # it also ran once, so the first request finds it ready


def test_a_failed_warm_up_is_logged_and_never_raises(db, monkeypatch, caplog):
    def broken():
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(inference, "get_active", broken)
    with caplog.at_level(logging.WARNING, logger="classifier.serving.cache"):
        assert inference.warm_up() == "warm-up failed: disk on fire"
    assert "the first request will load the model" in caplog.text


def test_the_background_warm_up_imports_the_views_and_loads_the_model_only_when_enabled(db, settings, monkeypatch):
    import django.urls

    from classifier.serving import warmup

    calls = []

    class Resolver:
        @property
        def url_patterns(self):  # what imports every view module
            calls.append("views")
            return []

    monkeypatch.setattr(django.urls, "get_resolver", lambda: Resolver())
    monkeypatch.setattr(inference, "warm_up", lambda: calls.append("model") or "warmed up")
    settings.BREEDLAB_WARM_UP = False
    assert warmup.start() is None
    settings.BREEDLAB_WARM_UP = True
    thread = warmup.start()
    thread.join(30)
    assert calls == ["views", "model"] and thread.daemon and not thread.is_alive()


def test_a_version_folder_outside_the_runs_root_is_refused(settings):
    with pytest.raises(ValueError):
        inference.run_dir_for("../../etc")


def test_thresholds_reject_at_most_the_target_share_of_calibration_photos():
    rng = np.random.default_rng(0)
    dog_mass = rng.uniform(0.0, 1.0, 1000)
    confidences = rng.uniform(0.2, 1.0, 1000)
    th = choose_thresholds(dog_mass, confidences, target=0.03)
    verdicts = [th.verdict(dog_mass=d, confidence=1.0) for d in dog_mass]
    assert 0.02 <= verdicts.count(NOT_DOG) / 1000 <= 0.03
    verdicts = [th.verdict(dog_mass=1.0, confidence=c) for c in confidences]
    assert 0.02 <= verdicts.count(NOT_SURE) / 1000 <= 0.03


def test_the_rule_checks_dog_mass_before_confidence():
    th = Thresholds(dog_mass=0.3, confidence=0.5, source="test")
    assert th.verdict(dog_mass=0.1, confidence=0.99) == NOT_DOG
    assert th.verdict(dog_mass=0.9, confidence=0.2) == NOT_SURE
    assert th.verdict(dog_mass=0.9, confidence=0.9) == DOG
    assert th.verdict(dog_mass=None, confidence=0.9) == DOG
    assert DEFAULT_THRESHOLDS.source == "default"


def test_calibrate_model_writes_thresholds_that_serving_then_uses(finetuned_run, register_version, not_dogs_dir, tmp_path):
    import json
    import shutil
    from io import StringIO

    from django.core.management import call_command

    run = tmp_path / "run"
    shutil.copytree(finetuned_run, run)
    out = StringIO()
    call_command("calibrate_model", run_dir=run, not_dogs=not_dogs_dir / "cats", stdout=out)
    saved = json.loads((run / "calibration.json").read_text())
    n_val = len(json.loads((run / "validation.json").read_text())["predictions"])
    assert 0.0 < saved["thresholds"]["dog_mass"] < 1.0 and saved["validation"]["n"] == n_val
    assert saved["not_dogs"]["cats"]["dog_rate"] <= 0.1  # cats are rarely named as a breed
    register_version(run, name="calibrated")
    assert inference.get_active().thresholds.dog_mass == pytest.approx(saved["thresholds"]["dog_mass"])
    assert inference.get_active().thresholds.source == "calibration.json"


def test_calibrate_model_needs_a_model(db):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="model version id or --run-dir"):
        call_command("calibrate_model")


def test_an_unchanged_promotion_announcement_stands_in_for_the_active_version_query(
    finetuned_run, perturbed_run, register_version, django_assert_num_queries, monkeypatch
):
    a = register_version(finetuned_run, name="a")
    assert inference.get_active(b"announce-a").version_id == a.pk  # checked against the database
    with django_assert_num_queries(0):
        assert inference.get_active(b"announce-a").version_id == a.pk
    b = register_version(perturbed_run, name="b")  # another host promotes: the announcement changes
    assert inference.get_active(b"announce-b").version_id == b.pk
    with django_assert_num_queries(1):  # without an announcement, every request asks the database
        assert inference.get_active(None).version_id == b.pk
    # A change made without a new announcement is still seen once the hint is HINT_TRUST_SECONDS old.
    assert inference.get_active(b"announce-b").version_id == b.pk
    ModelVersion.objects.filter(pk=b.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=a.pk).update(is_active=True)
    assert inference.get_active(b"announce-b").version_id == b.pk  # trusted for now
    clock = inference.time.monotonic() + inference.HINT_TRUST_SECONDS + 0.1
    monkeypatch.setattr(inference.time, "monotonic", lambda: clock)
    assert inference.get_active(b"announce-b").version_id == a.pk
