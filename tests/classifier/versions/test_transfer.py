"""Export a model version (API, page), classify outside Breedlab with the README's snippet, and
import the archive into a fresh install (API, page, manage.py import_model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError

from classifier.models import ModelVersion

pytestmark = [pytest.mark.usefixtures("fresh_serving"), pytest.mark.slow]


@pytest.fixture(scope="session")
def exported_archive(finetuned_run, tmp_path_factory) -> Path:
    """The session model exported once (the API's bytes are checked to be such an archive)."""
    from training.export import export_model

    out = tmp_path_factory.mktemp("exported") / "model.zip"
    export_model(finetuned_run, out, dataset={"model_name": "dogs4", "name": "dogs4", "version": 1})
    return out


def _download(client, version) -> bytes:
    response = client.get(f"/api/models/{version.pk}/export")
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"] == "application/zip"
    assert f"breedlab-model-{version.pk}.zip" in response["Content-Disposition"]
    return b"".join(response.streaming_content)


def _server_top5(client, photo: Path) -> list[str]:
    upload = SimpleUploadedFile(photo.name, photo.read_bytes(), content_type="image/jpeg")
    response = client.post("/api/predict", {"image": upload, "top_k": "5"})
    assert response.status_code == 200, response.content
    return [p["label"] for p in response.json()["predictions"]]


def _snippet_top5(folder: Path, photo: Path) -> list[str]:
    from training.archive import extract_snippet

    (folder / "classify.py").write_text(extract_snippet((folder / "README.md").read_text()))
    done = subprocess.run([sys.executable, "classify.py", str(photo)], cwd=folder, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")})
    assert done.returncode == 0, done.stderr
    by_display = {x["display_name"]: x["name"] for x in json.loads((folder / "labels.json").read_text())}
    return [by_display[line.split("\t")[0]] for line in done.stdout.strip().splitlines()]


def test_exported_model_gives_the_servers_top5_outside_breedlab(staff_client, active_model, held_out_photos, tmp_path):
    data = _download(staff_client, active_model)
    (tmp_path / "m.zip").write_bytes(data)
    folder = tmp_path / "x"
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        zf.extractall(folder)
    card = json.loads((folder / "model_card.json").read_text())
    assert card["name"] == "dogs4" and card["accuracy"]["test_acc"] == active_model.metrics.get("test_acc")
    for breed in ("pug", "beagle"):
        photo = held_out_photos[breed][-1]
        assert _snippet_top5(folder, photo) == _server_top5(staff_client, photo)


def test_export_needs_staff_unless_the_setting_allows_it(client, plain_user, active_model, settings):
    response = client.get(f"/api/models/{active_model.pk}/export")
    assert response.status_code == 403 and "error" in response.json()
    page = client.get(f"/models/{active_model.pk}/export/")
    assert page.status_code == 302 and "/login" in page["Location"]
    assert "Download" not in client.get("/models/").content.decode()
    settings.BREEDLAB_PUBLIC_MODEL_EXPORT = True
    assert client.get(f"/models/{active_model.pk}/export/").status_code == 200
    assert 'download>Download</a>' in client.get("/models/").content.decode()


def test_the_builtin_model_is_not_exported(staff_client, db):
    builtin = ModelVersion.objects.get(kind=ModelVersion.Kind.BUILTIN)
    response = staff_client.get(f"/api/models/{builtin.pk}/export")
    assert response.status_code == 409 and "built-in" in response.json()["error"]


def test_import_into_a_fresh_install_serves_the_same_answers(staff_client, exported_archive, finetuned_run, register_version,
                                                              held_out_photos, settings):
    photos = [held_out_photos["pug"][-1], held_out_photos["siberian_husky"][-1]]
    original = register_version(finetuned_run)
    before = [_server_top5(staff_client, p) for p in photos]
    original.delete()  # a fresh install: only the built-in model is left
    (Path(settings.RUNS_ROOT) / "dogs4").unlink()
    with exported_archive.open("rb") as f:
        response = staff_client.post("/api/models/import", {"archive": f})
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["is_active"] is False and body["class_names"] == json.loads((finetuned_run / "meta.json").read_text())["class_names"]
    version = ModelVersion.objects.get(pk=body["id"])
    assert version.path == f"imported/{version.pk}"
    assert (Path(settings.RUNS_ROOT) / version.path / "model.safetensors").is_file()
    assert staff_client.post(f"/api/models/{version.pk}/promote").status_code == 200
    assert [_server_top5(staff_client, p) for p in photos] == before
    # and it exports again
    assert zipfile.is_zipfile(__import__("io").BytesIO(_download(staff_client, version)))


def test_import_refuses_a_bad_archive_with_a_reason(staff_client, client, plain_user, db, tmp_path):
    bad = SimpleUploadedFile("m.zip", b"not a zip at all", content_type="application/zip")
    response = staff_client.post("/api/models/import", {"archive": bad})
    assert response.status_code == 400
    assert "not a zip archive" in response.json()["error"]
    assert staff_client.post("/api/models/import", {}).status_code == 400
    page = staff_client.post("/models/import/", {"archive": SimpleUploadedFile("m.zip", b"PK junk")}, follow=True)
    assert "The archive is refused" in page.content.decode()
    client.force_login(plain_user)
    assert client.post("/api/models/import", {}).status_code == 403
    assert ModelVersion.objects.filter(kind=ModelVersion.Kind.FINE_TUNED).count() == 0
    assert not list(Path(tmp_path).glob("**/.incoming-*"))


def test_import_model_command(exported_archive, db, tmp_path, capsys):
    (tmp_path / "bad.zip").write_bytes(b"nope")
    with pytest.raises(CommandError) as info:
        call_command("import_model", str(tmp_path / "bad.zip"))
    assert info.value.returncode == 2 and "not a zip archive" in str(info.value)
    call_command("import_model", str(exported_archive), "--promote")
    assert "imported model version" in capsys.readouterr().out
    active = ModelVersion.objects.get(is_active=True)
    assert active.metrics["imported"] is True and active.name == "dogs4 (imported)"
