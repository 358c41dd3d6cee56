"""Corrections that cannot poison datasets (issue 13, bullet 4)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from classifier.datasets import selectors
from classifier.models import Dataset, Feedback, Prediction
from classifier.serving.services import FeedbackError, feedback_create, feedback_review
from tests.classifier.dataset_archives import jpeg_bytes

CLASSES = ["beagle", "pug"]


@pytest.fixture(autouse=True)
def clean_cache():
    cache.clear()
    yield
    cache.clear()


def make_prediction(seed: int = 0) -> Prediction:
    prediction = Prediction.objects.create(top_label="pug", is_dog=True, result={"class_names": CLASSES})
    prediction.image.save(f"p{seed}.jpg", ContentFile(jpeg_bytes(seed)))
    return prediction


def test_one_correction_per_prediction_and_a_later_one_replaces_it(db):
    prediction = make_prediction()
    first = feedback_create(prediction=prediction, correct_label="beagle")
    feedback_review(feedback_ids=[first.pk], accept=True, reviewer=None)
    second = feedback_create(prediction=prediction, correct_label="pug")
    assert Feedback.objects.count() == 1 and second.pk == first.pk
    second.refresh_from_db()
    assert second.correct_label == "pug" and second.review == Feedback.Review.PENDING  # reviewed again
    with pytest.raises(IntegrityError), transaction.atomic():
        Feedback.objects.create(prediction=prediction, correct_label="beagle")


def test_a_merged_correction_cannot_be_replaced(db):
    prediction = make_prediction()
    feedback = feedback_create(prediction=prediction, correct_label="beagle")
    dataset = Dataset.objects.create(name="d", version=1, path="d", classes=CLASSES)
    Feedback.objects.filter(pk=feedback.pk).update(merged_into=dataset)
    with pytest.raises(FeedbackError, match="already part of a dataset"):
        feedback_create(prediction=prediction, correct_label="pug")


def test_corrections_are_rate_limited_per_client(client, db, settings):
    settings.BREEDLAB_FEEDBACK_RATE_LIMIT = "2/h"
    predictions = [make_prediction(i) for i in range(3)]
    from classifier.serving import views

    session = client.session
    session[views.SESSION_KEY] = [p.pk for p in predictions]
    session.save()
    answers = [client.post(f"/predictions/{p.pk}/feedback/", {"correct_label": "beagle"}) for p in predictions]
    assert [a.status_code for a in answers] == [302, 302, 302]
    assert "Retry-After" in answers[2] and "Retry-After" not in answers[1]
    assert Feedback.objects.count() == 2


def test_only_accepted_corrections_count_and_merge_and_the_count_is_one_query_per_step(db):
    dataset = Dataset.objects.create(name="d", version=1, path="d", classes=CLASSES, status=Dataset.Status.READY)
    items = [feedback_create(prediction=make_prediction(i), correct_label=CLASSES[i % 2]) for i in range(30)]
    assert selectors.dataset_feedback_mergeable_count(dataset) == 0  # nothing reviewed yet
    feedback_review(feedback_ids=[f.pk for f in items[:20]], accept=True, reviewer=None)
    feedback_review(feedback_ids=[f.pk for f in items[20:25]], accept=False, reviewer=None)
    with CaptureQueriesContext(connection) as queries:
        assert selectors.dataset_feedback_mergeable_count(dataset) == 20
    assert len(queries) == 2  # distinct labels, then a COUNT: never every row
    assert {f.pk for f, _ in selectors.dataset_feedback_mergeable(dataset)} == {f.pk for f in items[:20]}


def test_staff_review_corrections_with_the_photo_in_the_admin(client, db):
    staff = User.objects.create_superuser("boss", "b@example.org", "pw")
    client.force_login(staff)
    feedback = feedback_create(prediction=make_prediction(), correct_label="beagle")
    page = client.get("/admin/classifier/feedback/").content.decode()
    assert f"/predictions/{feedback.prediction_id}/photo.jpg" in page
    photo = client.get(f"/predictions/{feedback.prediction_id}/photo.jpg")
    assert photo.status_code == 200
    response = client.post("/admin/classifier/feedback/", {"action": "accept", "_selected_action": [feedback.pk]})
    assert response.status_code == 302
    feedback.refresh_from_db()
    assert feedback.review == Feedback.Review.ACCEPTED and feedback.reviewed_by == staff and feedback.reviewed_at
    client.post("/admin/classifier/feedback/", {"action": "reject", "_selected_action": [feedback.pk]})
    feedback.refresh_from_db()
    assert feedback.review == Feedback.Review.REJECTED
