"""Dataset pages: the list, a dataset's report and photos, the upload, merges and deletion.

Thin: it parses the request, calls services and selectors, and renders. Imports
classifier.datasets.forms, classifier.datasets.report_text, classifier.datasets.selectors,
classifier.datasets.services,
classifier.models, classifier.runs.selectors, classifier.web.access, classifier.web.templatetags.run_format
(besides Django and libraries);
never another domain's views or api.
"""

from __future__ import annotations

import mimetypes

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from classifier.datasets import selectors
from classifier.datasets import services as dataset_services
from classifier.datasets.forms import ArchiveSizeLimit, DatasetUploadForm
from classifier.datasets.report_text import problem_sentences, skip_reason, warning_sentences
from classifier.models import Dataset
from classifier.runs import selectors as runs_selectors
from classifier.web.access import staff_required
from classifier.web.templatetags.run_format import counted

THUMBNAILS_PER_PAGE = 24
# Cached derived files of a dataset never change (a dataset is never changed in place).
IMMUTABLE = "private, max-age=86400"
IMAGE_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}



@require_GET
def dataset_list(request: HttpRequest) -> HttpResponse:
    datasets = list(selectors.dataset_list())
    for dataset in datasets:
        dataset.problem_text = " ".join(problem_sentences(dataset.report))
    return render(request, "classifier/datasets/list.html", {"datasets": datasets})


@require_GET
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset.objects.select_related("created_by", "parent"), pk=pk)
    files = selectors.dataset_files_by_class(dataset)
    class_names = sorted(files)
    current = request.GET.get("class")
    if current not in files:
        current = class_names[0] if class_names else None
    page = Paginator(files.get(current, []), THUMBNAILS_PER_PAGE).get_page(request.GET.get("page"))
    val_per_class: dict[str, int] = {}
    for rel in dataset.split.get("val", []):
        val_per_class[rel.split("/", 1)[0]] = val_per_class.get(rel.split("/", 1)[0], 0) + 1
    report = dataset.report
    classes = [
        {**item, "val": val_per_class.get(item["name"], 0), "train": item["images"] - val_per_class.get(item["name"], 0)}
        for item in report.get("classes", [])
    ]
    histogram = report.get("sizes", {}).get("shorter_side_histogram", [])
    largest_bucket = max([bucket["count"] for bucket in histogram] or [0]) or 1
    mergeable_count = selectors.dataset_feedback_mergeable_count(dataset) if request.user.is_staff else 0
    return render(
        request,
        "classifier/datasets/detail.html",
        {
            "dataset": dataset,
            "report": report,
            "classes": classes,
            "histogram": [{**bucket, "percent": round(100 * bucket["count"] / largest_bucket)} for bucket in histogram],
            "current_class": current,
            "page": page,
            "train_count": len(dataset.split.get("train", [])),
            "val_count": len(dataset.split.get("val", [])),
            "versions": selectors.dataset_versions(dataset),
            "children": dataset.children.order_by("version"),
            "runs": runs_selectors.run_list(dataset_id=dataset.pk)[:10],
            "run_count": dataset.runs.count(),
            "mergeable_count": mergeable_count,
            "can_train": dataset.status == Dataset.Status.READY and not dataset.problems,
            "problems": problem_sentences(report),
            "warnings": warning_sentences(report),
            "skipped": [{**item, "reason_text": skip_reason(item.get("reason", ""))} for item in report.get("skipped", [])],
            "show_images": _images_visible(request),
        },
    )


@csrf_exempt  # CSRF is checked in _dataset_create, after the upload size limit is installed.
@staff_required
def dataset_create(request: HttpRequest) -> HttpResponse:
    """Upload a dataset archive. With JS, the form posts by XHR (progress bar) and gets JSON back."""
    limit = ArchiveSizeLimit(request)
    if request.method == "POST":
        request.upload_handlers.insert(0, limit)
    return _dataset_create(request, limit)


@csrf_protect
def _dataset_create(request: HttpRequest, limit: ArchiveSizeLimit) -> HttpResponse:
    wants_json = request.headers.get("x-requested-with") == "XMLHttpRequest"
    if request.method != "POST":
        return render(request, "classifier/datasets/form.html", _form_context(DatasetUploadForm()))
    form = DatasetUploadForm(request.POST, request.FILES)
    status, failed = 400, None
    if limit.exceeded:
        form.is_valid()
        form.errors.pop("archive", None)
        form.add_error("archive", limit.message())
        status = 413
    elif form.is_valid():
        data = form.cleaned_data
        try:
            dataset = dataset_services.dataset_import_upload(
                name=data["name"],
                upload=data["archive"],
                created_by=request.user,
                description=data["description"],
                seed=data["seed"],
                val_fraction=data["val_fraction"],
            )
        except dataset_services.DatasetError as exc:
            form.add_error(None, str(exc))
            failed = exc.dataset
        else:
            if dataset.problems:
                messages.warning(
                    request,
                    _("Imported %(dataset)s, but it cannot be trained on yet: see the problems below.")
                    % {"dataset": dataset},
                )
            else:
                messages.success(
                    request,
                    _("Imported %(dataset)s: %(photos)s, %(breeds)s.")
                    % {"dataset": dataset, "photos": counted(dataset.image_count, "photo"),
                       "breeds": counted(dataset.class_count, "breed")},
                )
            if wants_json:
                return JsonResponse({"id": dataset.pk, "url": dataset.get_absolute_url()}, status=201)
            return redirect(dataset)
    if wants_json:
        return JsonResponse(
            {
                "error": " ".join(str(message) for message in form.errors.get("__all__", []))
                or _("Please correct the errors below."),
                "fields": {field: [str(m) for m in errors] for field, errors in form.errors.items() if field != "__all__"},
                "failed_url": failed.get_absolute_url() if failed else None,
            },
            status=status,
        )
    return render(request, "classifier/datasets/form.html", _form_context(form, failed=failed), status=status)


def _form_context(form: DatasetUploadForm, failed: Dataset | None = None) -> dict:
    return {
        "form": form,
        "failed": failed,
        "max_bytes": settings.BREEDLAB_MAX_ARCHIVE_BYTES,
        "max_size": dataset_services.human_size(settings.BREEDLAB_MAX_ARCHIVE_BYTES),
        "upload_messages": {
            "uploading": _("Uploading… %(percent)s%%"),
            "checking": _("Upload complete. Checking every photo…"),
            "too_big": ArchiveSizeLimit().message(),
            "network": _("The upload was interrupted. Please try again."),
            "failed": _("The upload failed (HTTP %(status)s)."),
            "failed_link": _("See the recorded failed import."),
        },
    }


@require_POST
@staff_required
def dataset_merge(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk)
    try:
        version = dataset_services.dataset_merge_feedback(dataset=dataset, created_by=request.user)
    except dataset_services.DatasetError as exc:
        messages.error(request, str(exc))
        return redirect(exc.dataset or dataset)
    messages.success(
        request,
        _("Merged the corrections into %(dataset)s; %(parent)s is unchanged.") % {"dataset": version, "parent": dataset},
    )
    return redirect(version)


@require_POST
@staff_required
def dataset_delete(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = get_object_or_404(Dataset, pk=pk)
    label = str(dataset)
    try:
        size = dataset_services.dataset_delete(dataset=dataset, user=request.user)
    except dataset_services.DatasetError as exc:
        messages.error(request, str(exc))
        return redirect(dataset)
    messages.success(request, _("Deleted %(dataset)s; %(size)s are freed when the grace period ends (it can be restored from the storage page until then).")
                     % {"dataset": label, "size": filesizeformat(size)})
    return redirect("classifier:dataset_list")


# Files: only the dataset's own usable images (a whitelist), always with an image content type.


def _images_visible(request: HttpRequest) -> bool:
    return settings.BREEDLAB_PUBLIC_DATASET_IMAGES or request.user.is_staff


def _whitelisted(request: HttpRequest, pk: int, relpath: str) -> tuple[Dataset, object]:
    if not _images_visible(request):
        raise PermissionDenied
    dataset = get_object_or_404(Dataset, pk=pk, status=Dataset.Status.READY)
    path = selectors.dataset_file_path(dataset, relpath)
    if path is None:
        raise Http404("No such image in this dataset.")
    return dataset, path


def _image_response(path, content_type: str) -> FileResponse:
    response = FileResponse(open(path, "rb"), content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Disposition"] = "inline"
    response["Cache-Control"] = IMMUTABLE
    return response


@require_GET
def dataset_image(request: HttpRequest, pk: int, relpath: str) -> FileResponse:
    dataset, path = _whitelisted(request, pk, relpath)
    content_type = IMAGE_TYPES.get(path.suffix.lower()) or _sniffed_type(path)
    # EXIF (GPS position, camera, time) and other metadata never leave the server.
    return _image_response(dataset_services.dataset_image_public(dataset=dataset, path=path, relpath=relpath), content_type)


@require_GET
def dataset_thumbnail(request: HttpRequest, pk: int, relpath: str) -> FileResponse:
    dataset, path = _whitelisted(request, pk, relpath)
    thumbnail = dataset_services.dataset_thumbnail(dataset=dataset, path=path, relpath=relpath)
    return _image_response(thumbnail, "image/jpeg")


@require_GET
def dataset_chart(request: HttpRequest, pk: int) -> FileResponse:
    dataset = get_object_or_404(Dataset, pk=pk, status=Dataset.Status.READY)
    narrow = request.GET.get("layout") == "narrow"  # the phone's drawing
    path = dataset_services.dataset_chart(dataset=dataset, narrow=narrow)
    response = FileResponse(open(path, "rb"), content_type="image/svg+xml")
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response["Cache-Control"] = IMMUTABLE
    return response


def _sniffed_type(path) -> str:
    """Content type from Pillow's reading of the file (the report already opened it as an image)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            mime = Image.MIME.get(image.format or "")
    except OSError:
        mime = None
    if mime and mime.startswith("image/"):
        return mime
    guessed, _encoding = mimetypes.guess_type(path.name)
    return guessed if guessed and guessed.startswith("image/") else "application/octet-stream"
