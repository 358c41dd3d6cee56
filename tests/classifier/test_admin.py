import pytest

from classifier.models import Feedback, ModelVersion, Prediction

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["dataset", "trainingrun", "epochmetric", "modelversion", "prediction", "feedback"])
def test_staff_can_open_every_changelist(staff_client, make_run, model):
    run = make_run()
    version = ModelVersion.objects.create(run=run, name="v1", backbone="efficientnet_lite0", path="v1")
    prediction = Prediction.objects.create(model_version=version, top_label="beagle", top_score=0.9, is_dog=True)
    Feedback.objects.create(prediction=prediction, correct_label="pug")
    response = staff_client.get(f"/admin/classifier/{model}/")
    assert response.status_code == 200


def test_the_run_list_names_the_network_an_automatic_run_chose(staff_client, make_run):
    make_run(config={"backbone": "auto"}, status="succeeded", result={"metrics": {"backbone": "efficientnet_lite1"}})
    make_run(config={"backbone": "auto"})
    html = staff_client.get("/admin/classifier/trainingrun/").content.decode()
    assert "EfficientNet-Lite1 (chosen automatically)" in html and ">Automatic<" in html


def test_anonymous_visitors_are_sent_to_the_login_page(client):
    response = client.get("/admin/classifier/trainingrun/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_ensure_admin_creates_one_account_once(monkeypatch, django_user_model):
    from io import StringIO

    from django.core.management import call_command

    monkeypatch.delenv("DJANGO_SUPERUSER_PASSWORD", raising=False)
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    assert "password:" in out.getvalue()
    assert django_user_model.objects.filter(is_superuser=True).count() == 1
    out = StringIO()
    call_command("ensure_admin", stdout=out)
    assert "exists already" in out.getvalue()
    assert django_user_model.objects.filter(is_superuser=True).count() == 1


def test_the_admin_cannot_change_a_datasets_files_classes_or_split(staff_client, make_dataset):
    dataset = make_dataset(description="old")
    response = staff_client.post(
        f"/admin/classifier/dataset/{dataset.pk}/change/",
        {"description": "new", "path": "../../etc", "classes": '["x"]', "status": "failed"},
    )
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert dataset.description == "new"
    assert dataset.path == "dogs/v1" and dataset.classes == ["beagle", "pug"] and dataset.status == "ready"
