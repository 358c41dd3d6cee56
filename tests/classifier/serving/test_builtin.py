"""The built-in model (issue 12): it exists and serves from the first migrate, with no dataset and no
run; promoting a fine-tuned model and rolling back returns to it; the predict API's verdicts on real
photos; the OpenAPI schema for Accept: application/json; manage.py without exported settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from classifier.models import ModelVersion
from classifier.serving import cache as inference
from classifier.versions import services as version_services

pytestmark = pytest.mark.django_db
REPO = Path(__file__).resolve().parents[3]


def _photo(path: Path) -> SimpleUploadedFile:
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")


def _predict(client, path: Path) -> dict:
    response = client.post(reverse("api:predict"), {"image": _photo(path)})
    assert response.status_code == 200, response.content
    return response.json()


def test_the_first_migrate_creates_the_active_builtin_model_with_clean_breed_names():
    version = ModelVersion.objects.get(kind=ModelVersion.Kind.BUILTIN)
    assert version.is_active and version.promoted_at is not None
    assert version.path == "" and version.backbone == "efficientnet_lite0"
    assert len(version.class_names) == 118 and "Walker hound" in version.class_names
    assert not any(name.startswith("n0") for name in version.class_names)
    assert version_services.builtin_ensure().pk == version.pk  # idempotent
    assert ModelVersion.objects.filter(kind=ModelVersion.Kind.BUILTIN).count() == 1


def test_active_model_endpoint_answers_on_a_fresh_install(client):
    response = client.get(reverse("api:models_active"))
    assert response.status_code == 200
    assert response.json()["name"] == ModelVersion.BUILTIN_NAME and len(response.json()["class_names"]) == 118


def test_builtin_model_names_a_breed_on_a_fresh_install(client, stanford_dogs_dir, fresh_serving):
    beagles = sorted((stanford_dogs_dir / "beagle").glob("*.jpg"))[:6]
    answers = [_predict(client, p) for p in beagles]
    known = set(ModelVersion.objects.get(kind="builtin").class_names)
    for answer in answers:
        assert answer["model"]["builtin"] is True and answer["verdict"] in {"dog", "not_sure"}
        assert {p["label"] for p in answer["predictions"]} <= known
        assert set(answer["thresholds"]) == {"dog_mass", "confidence", "source"}
    named = [a for a in answers if a["verdict"] == "dog"]
    assert named and sum(a["predictions"][0]["label"] == "Beagle" for a in named) >= len(named) / 2
    page = client.post(reverse("classifier:home"), {"image": _photo(beagles[0])}, follow=True)
    assert page.status_code == 200 and b"118 ImageNet dog breeds" in page.content


def test_each_verdict_from_real_photos(client, stanford_dogs_dir, not_dogs_dir, fresh_serving, settings):
    settings.BREEDLAB_RATE_LIMIT = "off"
    cats = sorted((not_dogs_dir / "cats").glob("*.jpg"))
    verdicts = {_predict(client, p)["verdict"] for p in cats[:12]}
    assert "not_a_dog" in verdicts
    dogs = sorted(stanford_dogs_dir.glob("*/*.jpg"))[::60]
    answers = [_predict(client, p) for p in dogs]
    assert {a["verdict"] for a in answers} >= {"dog"}
    # not sure: a dog whose breed the built-in model is unsure of (the thresholds say where)
    unsure = [a for a in answers if a["verdict"] == "not_sure"]
    assert unsure, "no photo among the sampled dogs was answered 'not sure'"
    for a in unsure:
        assert a["dog_mass"] >= a["thresholds"]["dog_mass"] and a["predictions"][0]["score"] < a["thresholds"]["confidence"]
    for a in answers:
        assert a["is_dog"] == (a["verdict"] != "not_a_dog")


def test_promoting_a_finetuned_model_then_rolling_back_returns_to_the_builtin(
    staff_client, active_model, fresh_serving, stanford_dogs_dir
):
    builtin = ModelVersion.objects.get(kind=ModelVersion.Kind.BUILTIN)
    version_services.model_promote(version=active_model)
    assert inference.get_active().version_id == active_model.pk
    response = staff_client.post(reverse("api:model_rollback"))
    assert response.status_code == 200, response.content
    assert response.json()["id"] == builtin.pk
    assert inference.get_active().builtin
    beagle = sorted((stanford_dogs_dir / "beagle").glob("*.jpg"))[0]
    assert _predict(staff_client, beagle)["model"]["id"] == builtin.pk


def test_models_page_explains_the_builtin_model_and_a_subset(client, active_model):
    page = client.get(reverse("classifier:model_list")).content.decode()
    assert "Pretrained: 118 dog breeds (ImageNet)" in page and 'id="models-explainer"' in page
    assert "subset of the built-in model" in page  # the session's model is fine-tuned on 4 Stanford breeds


def test_openapi_answers_accept_json_and_documents_the_answer(client):
    response = client.get("/api/openapi.json", HTTP_ACCEPT="application/json")
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    schema = response.json()
    answer = schema["components"]["schemas"]["PredictAnswer"]["properties"]
    assert {"verdict", "thresholds", "is_dog", "predictions", "base_predictions", "model"} <= set(answer)
    assert schema["paths"]["/api/predict"]["post"]["security"] == []
    assert schema["paths"]["/api/models/active"]["get"]["security"] == []
    assert schema["paths"]["/api/models/rollback"]["post"]["security"]


def test_manage_py_works_without_exported_settings(tmp_path):
    """The key make run generated (var/secret_key) and its Redis (var/launcher.json) are found."""
    var = tmp_path / "var"
    var.mkdir()
    (var / "secret_key").write_text("k" * 50)
    (var / "launcher.json").write_text(f'{{"pid": {os.getpid()}, "redis_url": "redis://127.0.0.1:6399/0"}}')
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "SECRET_KEY_FILE", "REDIS_URL", "DEBUG", "DJANGO_SETTINGS_MODULE"}}
    env["BREEDLAB_VAR_DIR"] = str(var)
    code = "from django.conf import settings; print(settings.SECRET_KEY == 'k' * 50, settings.REDIS_URL)"
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "True redis://127.0.0.1:6399/0" in out.stdout
    migrate = subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=REPO, env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr
