from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from classifier.web.errors import json_error_handler


def _handle(exc):
    request = APIRequestFactory().get("/api/x")
    return json_error_handler(exc, {"view": APIView(), "request": request})


def test_django_404_inside_an_api_view_becomes_a_json_error():
    response = _handle(Http404("no such run"))
    assert response.status_code == 404
    assert set(response.data) == {"error"}


def test_django_permission_denied_inside_an_api_view_becomes_a_json_error():
    response = _handle(PermissionDenied())
    assert response.status_code == 403
    assert set(response.data) == {"error"}


def test_validation_errors_name_the_field():
    from rest_framework.exceptions import ValidationError

    response = _handle(ValidationError({"top_k": ["must be between 1 and 20"]}))
    assert response.status_code == 400
    assert response.data["error"] == "top_k: must be between 1 and 20"


def test_an_oversized_api_body_answers_json(staff_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = staff_client.post("/api/runs", data='{"x": "' + "a" * 5000 + '"}', content_type="application/json")
    assert response.status_code in (400, 413)
    assert set(response.json()) == {"error"}
