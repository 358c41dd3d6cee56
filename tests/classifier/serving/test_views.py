"""The classify page `/`: plain form and fetch, answers, before/after, corrections, Grad-CAM."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from classifier.models import Feedback, ModelVersion, Prediction

pytestmark = pytest.mark.usefixtures("fresh_serving")


def upload(path: Path) -> SimpleUploadedFile:
    return SimpleUploadedFile(path.name, path.read_bytes(), content_type="image/jpeg")


def test_the_page_offers_picker_camera_and_drop_and_works_without_javascript(client, active_model):
    html = client.get("/").content.decode()
    assert 'enctype="multipart/form-data"' in html and 'method="post"' in html
    assert 'name="image"' in html and 'accept="image/*"' in html
    assert 'capture="environment"' in html
    assert 'id="dropzone"' in html and "js/classify.js" in html
    assert "dogs4" in html  # which model answers


def test_a_photo_posted_as_a_plain_form_redirects_to_its_answer(client, active_model, held_out_photos):
    response = client.post("/", {"image": upload(held_out_photos["golden_retriever"][0])})
    prediction = Prediction.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/predictions/{prediction.pk}/"
    html = client.get(response["Location"]).content.decode()
    assert "Golden retriever" in html  # readable name
    assert "Answered by model “dogs4”" in html and " ms" in html
    assert "Before: the pretrained model" in html and "After: the fine-tuned model" in html
    assert "Wrong breed?" in html and f"/predictions/{prediction.pk}/heatmap.png" in html
    assert prediction.source == "web" and prediction.top_label == "golden_retriever" and prediction.is_dog


def test_a_photo_sent_by_fetch_gets_only_the_result_fragment(client, active_model, held_out_photos):
    response = client.post("/", {"image": upload(held_out_photos["pug"][0])}, HTTP_X_REQUESTED_WITH="fetch")
    html = response.content.decode()
    assert response.status_code == 200 and "<html" not in html
    assert "Pug" in html and "bar-fill" in html


def test_a_cat_is_not_named_as_a_breed(client, active_model, not_dogs_dir):
    cat = sorted((not_dogs_dir / "cats").iterdir())[0]
    html = client.post("/", {"image": upload(cat)}, HTTP_X_REQUESTED_WITH="fetch").content.decode()
    assert "This does not look like a dog." in html
    prediction = Prediction.objects.get()
    assert prediction.is_dog is False and prediction.top_label == ""


def test_without_an_active_model_the_page_says_so_and_shows_the_pretrained_answer(staff_client, db, held_out_photos):
    ModelVersion.objects.filter(kind="builtin").delete()  # a database without even the built-in model
    html = staff_client.get("/").content.decode()
    assert "No model version is active yet" in html and 'href="/runs/new/"' in html
    response = staff_client.post("/", {"image": upload(held_out_photos["beagle"][0])}, HTTP_X_REQUESTED_WITH="fetch")
    html = response.content.decode()
    assert response.status_code == 200
    assert "Before: the pretrained model" in html and "Beagle" in html  # ImageNet knows beagles
    assert "heatmap.png" not in html and "Wrong breed?" not in html


def test_a_bad_upload_shows_the_reason_and_stores_nothing(client, active_model, settings):
    response = client.post("/", {"image": SimpleUploadedFile("notes.jpg", b"plain text" * 50)})
    assert response.status_code == 400
    assert "not an image in a supported format" in response.content.decode()
    assert Prediction.objects.count() == 0
    assert not (Path(settings.MEDIA_ROOT) / "predictions").exists()


def test_posting_without_a_photo_asks_for_one(client, active_model):
    response = client.post("/", {})
    assert response.status_code == 400 and "Choose a photo" in response.content.decode()


def test_over_the_rate_limit_the_page_answers_429(client, active_model, held_out_photos, settings):
    settings.BREEDLAB_RATE_LIMIT = "1/h"
    assert client.post("/", {"image": upload(held_out_photos["pug"][0])}).status_code == 302
    response = client.post("/", {"image": upload(held_out_photos["pug"][0])})
    assert response.status_code == 429 and "Too many photos" in response.content.decode()
    assert Prediction.objects.count() == 1


def test_wrong_breed_stores_a_correction(client, active_model, held_out_photos):
    client.post("/", {"image": upload(held_out_photos["beagle"][0])})
    prediction = Prediction.objects.get()
    response = client.post(f"/predictions/{prediction.pk}/feedback/", {"correct_label": "pug"}, follow=True)
    assert "stored as a Pug" in response.content.decode()
    feedback = Feedback.objects.get()
    assert feedback.prediction == prediction and feedback.correct_label == "pug"


def test_the_page_lists_the_breeds_the_active_model_knows(client, active_model):
    html = client.get("/").content.decode()
    assert 'id="known-breeds"' in html
    for name in active_model.class_names:
        assert f"<li>{name.replace('_', ' ').capitalize()}</li>" in html


def test_wrong_breed_offers_every_breed_and_another_breed_and_is_sent_once(client, active_model, held_out_photos):
    client.post("/", {"image": upload(held_out_photos["beagle"][0])})
    prediction = Prediction.objects.get()
    html = client.get(f"/predictions/{prediction.pk}/").content.decode()
    for name in active_model.class_names:
        assert f'<option value="{name}">' in html
    assert '<option value="__other__">Another breed, or not a dog</option>' in html
    # Sent through classify.js: the fragment comes back with the thanks instead of the form.
    response = client.post(
        f"/predictions/{prediction.pk}/feedback/", {"correct_label": "__other__"}, headers={"X-Requested-With": "fetch"}
    )
    fragment = response.content.decode()
    assert response.status_code == 200 and 'id="feedback-thanks"' in fragment and 'id="feedback-form"' not in fragment
    assert Feedback.objects.get().correct_label == Feedback.OTHER_LABEL
    # Not re-sendable from the page: it shows the thanks instead of the form.
    html = client.get(f"/predictions/{prediction.pk}/").content.decode()
    assert 'id="feedback-form"' not in html and 'id="feedback-thanks"' in html


def test_a_correction_must_be_a_breed_the_model_knows(client, active_model, held_out_photos):
    client.post("/", {"image": upload(held_out_photos["beagle"][0])})
    prediction = Prediction.objects.get()
    client.post(f"/predictions/{prediction.pk}/feedback/", {"correct_label": "dragon"})
    assert Feedback.objects.count() == 0


def test_the_photo_and_heatmap_are_images_for_their_session_only(client, active_model, held_out_photos):
    client.post("/", {"image": upload(held_out_photos["siberian_husky"][0])})
    pk = Prediction.objects.get().pk
    photo = client.get(f"/predictions/{pk}/photo.jpg")
    assert photo.status_code == 200 and photo["Content-Type"] == "image/jpeg"
    heatmap = client.get(f"/predictions/{pk}/heatmap.png")
    assert heatmap.status_code == 200 and heatmap["Content-Type"] == "image/png"
    with Image.open(io.BytesIO(heatmap.content)) as img:
        assert img.format == "PNG" and img.size == (448, 448)
    from django.test import Client

    stranger = Client()
    for url in (f"/predictions/{pk}/", f"/predictions/{pk}/photo.jpg", f"/predictions/{pk}/heatmap.png"):
        assert stranger.get(url).status_code == 404


def test_staff_can_see_any_prediction(client, staff_client, active_model, held_out_photos):
    client.post("/", {"image": upload(held_out_photos["pug"][0])})
    pk = Prediction.objects.get().pk
    assert staff_client.get(f"/predictions/{pk}/").status_code == 200
