import pytest
from django.urls import reverse

from classifier.models import EpochMetric, ModelVersion

pytestmark = pytest.mark.django_db

PAGES = ["classifier:home", "classifier:run_list", "classifier:model_list", "classifier:dataset_list"]


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_for_an_anonymous_visitor(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 200
    html = response.content.decode()
    for link in PAGES:
        assert f'href="{reverse(link)}"' in html, f"navigation lacks {link}"


def test_the_run_page_shows_its_epochs(client, make_run):
    run = make_run()
    EpochMetric.objects.create(run=run, phase="head", epoch=1, train_loss=1.25, val_acc=87.5)
    response = client.get(reverse("classifier:run_detail", args=[run.pk]))
    assert response.status_code == 200
    assert "1.2500" in response.content.decode()


def test_an_unknown_run_is_a_404_page(client):
    assert client.get("/runs/999999/").status_code == 404


def test_the_run_list_filters_by_status(client, make_run):
    queued = make_run()
    failed = make_run(status="failed")
    html = client.get("/runs/?status=failed").content.decode()
    assert f'href="/runs/{failed.pk}/"' in html and f'href="/runs/{queued.pk}/"' not in html


def test_the_home_page_says_when_no_model_is_active(client):
    assert "Answers come from the built-in model" in client.get("/").content.decode()
    ModelVersion.objects.filter(kind="builtin").delete()  # a database without even the built-in model
    assert "No model version is active yet" in client.get("/").content.decode()
    ModelVersion.objects.create(name="dogs-v1", backbone="efficientnet_lite0", path="x", is_active=True)
    assert "dogs-v1" in client.get("/").content.decode()


def test_the_site_speaks_russian_when_the_browser_asks(client):
    html = client.get("/", headers={"accept-language": "ru"}).content.decode()
    assert 'lang="ru"' in html
    assert "Классифицировать" in html  # "Classify"
    assert "Обучение" in client.get("/runs/", headers={"accept-language": "ru"}).content.decode()


def test_the_language_switch_sets_the_language(client):
    response = client.post("/i18n/setlang/", {"language": "ru", "next": "/runs/"})
    assert response.status_code == 302 and response["Location"] == "/runs/"
    assert 'lang="ru"' in client.get("/runs/").content.decode()


def test_static_files_are_served_by_whitenoise_under_the_production_storage(client, settings):
    # The CSS is our own and ships in static/: no page fetches anything from the internet.
    html = client.get("/").content.decode()
    assert "/static/css/breedlab.css" in html
    assert "http://" not in html.replace("http://testserver", "") or "https://" not in html


def test_api_errors_are_json(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json() == {"error": "Not found."}
