"""The classify page: upload a photo (or drop, paste, shoot it), get the breed; corrections; Grad-CAM.

Works as a plain HTML form: POST / stores the answer and redirects to /predictions/<id>/.
With JavaScript (static/js/classify.js) the same POST is sent with ``X-Requested-With: fetch``
and answered with the result fragment only. A prediction's page, photo and heatmap are shown
to the browser session that made it and to staff.

Thin: it parses the request, calls services and selectors, and renders. Imports classifier.models,
classifier.serving.cache, classifier.serving.calibration, classifier.serving.forms,
classifier.serving.imaging, classifier.serving.ratelimit, classifier.serving.services,
classifier.versions.selectors (besides Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from django.conf import settings
from django.contrib import messages
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from PIL import Image

from classifier.models import Feedback, Prediction
from classifier.serving import cache as inference
from classifier.serving import ratelimit
from classifier.serving.calibration import DOG, NOT_DOG
from classifier.serving.forms import ClassifyForm, FeedbackForm
from classifier.serving.imaging import ImageRejected
from classifier.serving.services import FeedbackError, ServerBusy, feedback_create, prediction_create
from classifier.versions import selectors as versions_selectors
from classifier.web.names import class_display_name, version_display_name

log = logging.getLogger(__name__)

SESSION_KEY = "breedlab_predictions"
SESSION_KEEP = 100
HEATMAP_SIDE = 448


def _is_fetch(request: HttpRequest) -> bool:
    return request.headers.get("X-Requested-With") == "fetch"


def _remember(request: HttpRequest, prediction_id: int) -> None:
    ids = [i for i in request.session.get(SESSION_KEY, []) if i != prediction_id]
    request.session[SESSION_KEY] = [*ids, prediction_id][-SESSION_KEEP:]


def _visible_prediction(request: HttpRequest, pk: int) -> Prediction:
    prediction = get_object_or_404(Prediction.objects.select_related("model_version"), pk=pk)
    if not (request.user.is_staff or pk in request.session.get(SESSION_KEY, [])):
        raise Http404("No such prediction in this session.")
    return prediction


def _bars(items: list[dict]) -> list[dict]:
    return [
        {"label": item["label"], "name": class_display_name(item["label"]), "score": item["score"], "percent": round(100 * item["score"], 1)}
        for item in items
    ]


def result_context(prediction: Prediction) -> dict:
    """What the result fragment shows, from the stored row alone."""
    result = prediction.result or {}
    predictions = _bars(result.get("predictions", []))
    class_names = result.get("class_names") or []
    verdict = result.get("verdict", DOG)
    correction = prediction.feedback.order_by("created_at").first() if prediction.pk else None
    return {
        "prediction": prediction,
        "verdict": verdict,
        "is_not_dog": verdict == NOT_DOG,
        "is_unsure": verdict == "not_sure",
        "top": predictions[0] if predictions and verdict == DOG else None,
        "predictions": predictions,
        "base_predictions": _bars(result.get("base_predictions", [])),
        "model_name": version_display_name(result["model_name"]) if result.get("model_name") else None,
        "backbone": result.get("backbone"),
        "engine": result.get("engine"),
        "dog_percent": round(100 * result["dog_mass"], 1) if result.get("dog_mass") is not None else None,
        "has_model": prediction.model_version_id is not None,
        "is_builtin": bool(result.get("builtin")),
        "feedback_form": FeedbackForm(class_names=class_names) if class_names and prediction.image and not correction else None,
        "correction": correction,
        "correction_name": _correction_name(correction) if correction else None,
    }


def _correction_name(correction) -> str:
    if correction.correct_label == Feedback.OTHER_LABEL:
        return _("another breed, or not a dog")
    return class_display_name(correction.correct_label)


def _known_breeds(active) -> list[str]:
    """The active model's classes as people read them, in alphabetical order."""
    if active is None:
        return []
    return sorted((class_display_name(name) for name in active.class_names or []), key=str.lower)


def _page(request: HttpRequest, *, form: ClassifyForm, status: int = 200, error: str | None = None, prediction=None) -> HttpResponse:
    active = versions_selectors.model_get_active()
    context = {
        "form": form,
        "active_model": active,
        "active_subset": versions_selectors.model_within_builtin(active) if active is not None else None,
        "known_breeds": _known_breeds(active),
        "error": error,
    }
    if prediction is not None:
        context.update(result_context(prediction))
    template = "classifier/serving/_classify_result.html" if _is_fetch(request) else "classifier/serving/home.html"
    return render(request, template, context, status=status)


@require_http_methods(["GET", "POST"])
def home(request: HttpRequest) -> HttpResponse:
    """The classify page; POST classifies the uploaded photo."""
    if request.method != "POST":
        return _page(request, form=ClassifyForm())
    form = ClassifyForm(request.POST, request.FILES)
    if not form.is_valid():
        errors = [str(e) for errs in form.errors.values() for e in errs]
        return _page(request, form=form, status=400, error=" ".join(errors))
    with ratelimit.admit(request, "predict", read=versions_selectors.ACTIVE_MODEL_CACHE_KEY) as admission:
        if not admission.rate.allowed:
            message = _("Too many photos from you right now; try again in %(seconds)s s.") % {
                "seconds": admission.rate.retry_after
            }
            response = _page(request, form=ClassifyForm(), status=429, error=message)
            response["Retry-After"] = str(admission.rate.retry_after)
            return response
        if not admission.allowed:
            message = _("Your earlier photos are still being classified; wait for them, then try again.")
            response = _page(request, form=ClassifyForm(), status=429, error=message)
            response["Retry-After"] = "1"
            return response
        try:
            (answer,) = prediction_create(
                uploads=[form.cleaned_data["photo"]], user=request.user, source="web", allow_base_only=True,
                active_hint=admission.read,
            )
        except ImageRejected as exc:
            return _page(request, form=ClassifyForm(), status=exc.status, error=exc.message)
        except inference.ModelUnavailable as exc:  # not even the pretrained model could be loaded
            log.error("no model can answer: %s", exc)
            return _page(request, form=ClassifyForm(), status=503, error=_("No model can answer right now; try again later."))
        except ServerBusy as exc:
            response = _page(request, form=ClassifyForm(), status=503, error=str(exc))
            response["Retry-After"] = "30"
            return response
    _remember(request, answer.prediction.pk)
    if _is_fetch(request):
        return _page(request, form=ClassifyForm(), prediction=answer.prediction)
    return redirect("classifier:prediction_detail", pk=answer.prediction.pk)


@require_GET
def prediction_detail(request: HttpRequest, pk: int) -> HttpResponse:
    prediction = _visible_prediction(request, pk)
    return _page(request, form=ClassifyForm(), prediction=prediction)


@require_GET
def prediction_photo(request: HttpRequest, pk: int) -> HttpResponse:
    """The stored photo (always a JPEG we encoded ourselves)."""
    prediction = _visible_prediction(request, pk)
    if not prediction.image:
        raise Http404("No stored photo.")
    try:
        handle = prediction.image.open("rb")
    except OSError:
        raise Http404("The stored photo is missing.") from None
    response = FileResponse(handle, content_type="image/jpeg")
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = "private, max-age=3600"
    return response


@require_GET
def prediction_heatmap(request: HttpRequest, pk: int) -> HttpResponse:
    """Grad-CAM of the answering model's top class over the photo, as a PNG (what the model saw: the centre crop)."""
    prediction = _visible_prediction(request, pk)
    if prediction.model_version_id is None or not prediction.image:
        raise Http404("Only answers of a fine-tuned model have a heatmap.")
    limit = ratelimit.hit(request, "heatmap")
    if not limit.allowed:
        response = HttpResponse(_("Too many requests; try again later."), status=429, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(limit.retry_after)
        return response
    try:
        loaded = inference.get_version(prediction.model_version_id)
    except inference.ModelUnavailable as exc:
        return HttpResponse(str(exc), status=503, content_type="text/plain; charset=utf-8")
    with prediction.image.open("rb") as fh, Image.open(fh) as img:
        photo = img.convert("RGB")
    model = loaded.model
    names = model.class_names or []
    top = (prediction.result.get("predictions") or [{}])[0].get("label")
    class_index = names.index(top) if top in names else None
    cam, _index = model.gradcam(photo, class_index)
    png = heatmap_png(photo, cam, image_size=model.preprocessing.image_size, resize_size=model.preprocessing.resize_size)
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def heatmap_png(photo: Image.Image, cam: np.ndarray, *, image_size: int, resize_size: int) -> bytes:
    """The centre crop the model saw, with the Grad-CAM map blended over it."""
    from matplotlib import colormaps

    w, h = photo.size
    side = min(w, h) * image_size / resize_size
    left, top = (w - side) / 2, (h - side) / 2
    view = photo.crop((round(left), round(top), round(left + side), round(top + side))).resize(
        (HEATMAP_SIDE, HEATMAP_SIDE), Image.Resampling.BICUBIC
    )
    heat = Image.fromarray((np.clip(cam, 0, 1) * 255).astype(np.uint8)).resize(
        (HEATMAP_SIDE, HEATMAP_SIDE), Image.Resampling.BICUBIC
    )
    colored = (colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    blended = Image.blend(view, Image.fromarray(colored), alpha=0.45)
    buffer = io.BytesIO()
    blended.save(buffer, format="PNG")
    return buffer.getvalue()


@require_POST
def prediction_feedback(request: HttpRequest, pk: int) -> HttpResponse:
    """ "Wrong breed?": store the right breed for this photo."""
    prediction = _visible_prediction(request, pk)
    form = FeedbackForm(request.POST, class_names=list((prediction.result or {}).get("class_names") or []))
    error = None
    if not form.is_valid():
        error = _("Choose one of the breeds in the list.")
    else:
        limit = ratelimit.hit(request, "feedback", rate=settings.BREEDLAB_FEEDBACK_RATE_LIMIT)
        if not limit.allowed:
            messages.error(request, _("Too many corrections from you right now; try again in %(seconds)s s.") % {"seconds": limit.retry_after})
            response = redirect("classifier:prediction_detail", pk=pk)
            response["Retry-After"] = str(limit.retry_after)
            return response
        try:
            feedback_create(prediction=prediction, correct_label=form.cleaned_data["correct_label"], user=request.user)
        except FeedbackError as exc:
            error = str(exc)
    if _is_fetch(request):  # classify.js: the result fragment again, with the thanks (or the error)
        context = {"form": ClassifyForm(), "feedback_error": error, **result_context(prediction)}
        return render(request, "classifier/serving/_classify_result.html", context, status=400 if error else 200)
    if error:
        messages.error(request, error)
    return redirect(reverse("classifier:prediction_detail", args=[pk]))
