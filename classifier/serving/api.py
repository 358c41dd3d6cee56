"""POST /api/predict (one photo or a batch) and GET /api/models/active.

Thin: it parses the request, calls services and selectors, and renders. Imports
classifier.serving.cache, classifier.serving.imaging, classifier.serving.ratelimit,
classifier.serving.services, classifier.versions.selectors, classifier.web.errors (besides Django
and libraries); never another domain's views or api.
"""

from __future__ import annotations

import logging

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes, permission_classes
from rest_framework.parsers import MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from classifier.serving import cache as inference
from classifier.serving import ratelimit
from classifier.serving.imaging import ImageRejected
from classifier.serving.services import MAX_TOP_K, ServerBusy, prediction_create, record_when_sent
from classifier.versions import selectors as versions_selectors
from classifier.web.errors import error_response

log = logging.getLogger(__name__)

def _label_fields() -> dict[str, serializers.Field]:
    # New field instances for every serializer: one instance shared by two serializers is listed in only one.
    return {"label": serializers.CharField(), "score": serializers.FloatField()}

_model = inline_serializer(
    "AnsweringModel",
    fields={
        "id": serializers.IntegerField(),
        "name": serializers.CharField(),
        "backbone": serializers.CharField(),
        "builtin": serializers.BooleanField(
            help_text="True for the built-in model (the pretrained network's 118 ImageNet dog breeds), which "
            "answers while no fine-tuned model has been promoted."
        ),
    },
)
_thresholds = inline_serializer(
    "VerdictThresholds",
    fields={
        "dog_mass": serializers.FloatField(help_text="Below this dog mass: not_a_dog."),
        "confidence": serializers.FloatField(help_text="Below this top-1 probability: not_sure."),
        "source": serializers.CharField(help_text="Where they come from: a calibration, or the defaults."),
    },
)
_answer = inline_serializer(
    "PredictAnswer",
    fields={
        "model": _model,
        "verdict": serializers.ChoiceField(
            choices=["dog", "not_sure", "not_a_dog"],
            help_text="The page's answer: dog (the top prediction names the breed), not_sure (a dog, breed uncertain) "
            "or not_a_dog.",
        ),
        "thresholds": _thresholds,
        "dog_mass": serializers.FloatField(
            allow_null=True, help_text="Probability the pretrained ImageNet head gives to its 118 dog classes."
        ),
        "is_dog": serializers.BooleanField(help_text="verdict != not_a_dog (kept for older clients)."),
        "predictions": inline_serializer("LabelScore", fields=_label_fields(), many=True),
        "base_predictions": inline_serializer(
            "BaseLabelScore", fields=_label_fields(), many=True, help_text="The pretrained model in its own classes (ImageNet/CIFAR)."
        ),
        "elapsed_ms": serializers.FloatField(help_text="Server time to decode and classify (the whole batch)."),
    },
)
_error = inline_serializer("Error", fields={"error": serializers.CharField()})


def _too_many(limit: ratelimit.Limit) -> Response:
    response = error_response(
        f"Too many prediction requests: at most {limit.limit} per {settings.BREEDLAB_RATE_LIMIT.split('/')[1]}; "
        f"try again in {limit.retry_after} s.",
        status.HTTP_429_TOO_MANY_REQUESTS,
    )
    response["Retry-After"] = str(limit.retry_after)
    return response


@extend_schema(
    summary="Classify dog photos",
    description=(
        "Multipart form with one `image` field (one answer object) or several (a list, same order). "
        "Errors are `{\"error\": ...}`: 400 not an image / corrupt / truncated / unsupported format / too many "
        "pixels, 413 too large, 429 over the rate limit or too many requests in flight from one client, 503 no "
        "model can be loaded or the server stayed busy. While no fine-tuned model has been promoted, the built-in "
        "model (118 ImageNet dog breeds) answers."
    ),
    request={
        "multipart/form-data": {
            "type": "object",
            "properties": {
                "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
            },
            "required": ["image"],
        }
    },
    responses={
        200: OpenApiResponse(_answer, description="One answer, or a list of answers for several `image` fields."),
        400: _error,
        413: _error,
        429: _error,
        503: _error,
    },
    examples=[
        OpenApiExample(
            "One photo",
            response_only=True,
            status_codes=["200"],
            value={
                "model": {"id": 3, "name": "dogs-20-v1-run7", "backbone": "efficientnet_lite0", "builtin": False},
                "verdict": "dog",
                "thresholds": {"dog_mass": 0.515, "confidence": 0.409, "source": "calibration.json"},
                "dog_mass": 0.998,
                "is_dog": True,
                "predictions": [{"label": "golden_retriever", "score": 0.93}, {"label": "labrador_retriever", "score": 0.04}],
                "base_predictions": [{"label": "golden retriever", "score": 0.88}],
                "elapsed_ms": 14.2,
            },
        )
    ],
)
@api_view(["POST"])
@parser_classes([MultiPartParser])
@permission_classes([AllowAny])
def predict(request: Request) -> Response:
    uploads = request.FILES.getlist("image")
    if not uploads:
        return error_response("Send the photo as a multipart field named 'image'.")
    if len(uploads) > settings.BREEDLAB_MAX_BATCH_IMAGES:
        return error_response(f"At most {settings.BREEDLAB_MAX_BATCH_IMAGES} photos per request; got {len(uploads)}.")
    raw_k = request.data.get("top_k", "5")
    try:
        top_k = int(raw_k)
        if not 1 <= top_k <= MAX_TOP_K:
            raise ValueError
    except (TypeError, ValueError):
        return error_response(f"top_k must be a whole number from 1 to {MAX_TOP_K}.")
    with ratelimit.admit(request, "predict", cost=len(uploads), read=versions_selectors.ACTIVE_MODEL_CACHE_KEY) as admission:
        if not admission.rate.allowed:
            return _too_many(admission.rate)
        if not admission.allowed:
            response = error_response(
                f"At most {admission.limit} prediction requests from one client at a time; wait for your earlier ones.",
                status.HTTP_429_TOO_MANY_REQUESTS,
            )
            response["Retry-After"] = "1"
            return response
        try:
            answers = prediction_create(uploads=uploads, user=request.user, source="api", top_k=top_k, record=False,
                                        active_hint=admission.read)
        except ImageRejected as exc:
            return error_response(exc.message, exc.status)
        except inference.ModelUnavailable as exc:
            return error_response(str(exc), status.HTTP_503_SERVICE_UNAVAILABLE)
        except ServerBusy as exc:
            response = error_response(str(exc), status.HTTP_503_SERVICE_UNAVAILABLE)
            response["Retry-After"] = "30"
            return response
        payload = [a.as_api() for a in answers]
        # Recorded after the answer is sent, then the client's in-flight count released (closers run in order).
        response = record_when_sent(Response(payload if len(uploads) > 1 else payload[0]), answers)
        return admission.release_when_sent(response)


@extend_schema(
    summary="The model version that answers predictions",
    responses={
        200: inline_serializer(
            "ActiveModel",
            fields={
                "id": serializers.IntegerField(),
                "name": serializers.CharField(),
                "backbone": serializers.CharField(),
                "class_names": serializers.ListField(child=serializers.CharField()),
                "metrics": serializers.DictField(),
                "promoted_at": serializers.DateTimeField(allow_null=True),
            },
        ),
        404: OpenApiResponse(_error, description="No model version is active yet."),
    },
)
@api_view(["GET"])
@permission_classes([AllowAny])
def models_active(request: Request) -> Response:
    version = versions_selectors.model_get_active()
    if version is None:
        return error_response("No model version is active yet.", status.HTTP_404_NOT_FOUND)
    return Response(
        {
            "id": version.pk,
            "name": version.name,
            "backbone": version.backbone,
            "class_names": list(version.class_names),
            "metrics": {k: v for k, v in version.metrics.items() if isinstance(v, int | float | str | bool) or v is None},
            "promoted_at": version.promoted_at.isoformat() if version.promoted_at else None,
        }
    )
