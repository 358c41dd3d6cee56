"""The storage page (staff): what takes space; delete and restore runs, dataset versions, model versions.

Thin: it parses the request, calls services and selectors, and renders. Imports classifier.models,
classifier.storage.selectors, classifier.storage.services, classifier.web.access (besides Django
and libraries); never another domain's views or api.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from classifier.models import Dataset, ModelVersion, TrainingRun
from classifier.storage import selectors
from classifier.storage import services as storage_services
from classifier.web.access import staff_required

MODELS = {"run": TrainingRun, "dataset": Dataset, "model": ModelVersion}


def get_item(kind: str, pk: int):
    model = MODELS.get(kind)
    if model is None:
        raise Http404
    return get_object_or_404(model, pk=pk)


@staff_required
@require_GET
def storage(request: HttpRequest) -> HttpResponse:
    items = selectors.storage_items()
    return render(request, "classifier/storage/storage.html", {
        "roots": selectors.storage_roots(),
        "root_names": {"datasets": _("datasets"), "runs": _("runs"), "media": _("uploaded photos"),
                       "serving cache": _("serving cache")},
        "sections": [("dataset", _("Dataset versions"), items["dataset"]), ("run", _("Runs"), items["run"]),
                     ("model", _("Model versions"), items["model"])],
        "grace_hours": settings.BREEDLAB_DELETE_GRACE_HOURS,
    })


@staff_required
@require_POST
def item_delete(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    request.POST  # noqa: B018 - read the body first: an oversized one is refused (400) before any lookup
    obj = get_item(kind, pk)
    try:
        size = storage_services.item_delete(obj=obj, user=request.user)
    except storage_services.StorageError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Deleted; %(size)s are freed when the grace period ends (it can be restored until then).")
                         % {"size": filesizeformat(size)})
    return redirect("classifier:storage")


@staff_required
@require_POST
def item_restore(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    request.POST  # noqa: B018 - read the body first: an oversized one is refused (400) before any lookup
    try:
        storage_services.item_restore(obj=get_item(kind, pk))
    except storage_services.StorageError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Restored."))
    return redirect("classifier:storage")
