"""Model versions: the list, promotion and roll-back (staff, POST with CSRF).

Thin: it parses the request, calls services and selectors, and renders. Imports classifier.models,
classifier.versions.selectors, classifier.versions.services, classifier.web.access (besides Django
and libraries); never another domain's views or api.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from classifier.models import ModelVersion
from classifier.versions import selectors
from classifier.versions import services as version_services
from classifier.web.access import staff_required


@require_GET
def model_list(request: HttpRequest) -> HttpResponse:
    """Model versions with their metrics and which one serves."""
    versions = selectors.model_list()
    rows = [(v, selectors.model_within_builtin(v)) for v in versions]
    return render(
        request,
        "classifier/versions/list.html",
        {
            "versions": versions,
            "rows": rows,
            "builtin": next((v for v in versions if v.is_builtin), None),
            "can_rollback": versions.filter(is_active=False, promoted_at__isnull=False).exists(),
            "can_export": settings.BREEDLAB_PUBLIC_MODEL_EXPORT or request.user.is_staff,
        },
    )


@staff_required
@require_POST
def model_promote(request: HttpRequest, pk: int) -> HttpResponse:
    version = get_object_or_404(ModelVersion, pk=pk)
    try:
        version_services.model_promote(version=version, user=request.user)
    except version_services.VersionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(name)s now serves.") % {"name": version.name})
    return redirect("classifier:model_list")


@staff_required
@require_POST
def model_rollback(request: HttpRequest) -> HttpResponse:
    try:
        version = version_services.model_rollback(user=request.user)
    except version_services.VersionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Rolled back: %(name)s serves again.") % {"name": version.name})
    return redirect("classifier:model_list")


@require_GET
def model_export(request: HttpRequest, pk: int) -> HttpResponse:
    """Download the version's archive (staff, or anyone when BREEDLAB_PUBLIC_MODEL_EXPORT is on)."""
    from django.http import FileResponse

    if not (settings.BREEDLAB_PUBLIC_MODEL_EXPORT or request.user.is_staff):
        if not request.user.is_authenticated:
            from django.contrib.auth.views import redirect_to_login

            return redirect_to_login(request.get_full_path())
        raise PermissionDenied
    version = get_object_or_404(ModelVersion, pk=pk)
    try:
        path = version_services.model_export(version=version)
    except version_services.VersionError as exc:
        messages.error(request, str(exc))
        return redirect("classifier:model_list")
    return FileResponse(path.open("rb"), as_attachment=True, filename=f"breedlab-model-{version.pk}.zip",
                        content_type="application/zip")


@staff_required
def model_import(request: HttpRequest) -> HttpResponse:
    """Upload an exported archive; it is validated and listed as a version that can be promoted."""
    if request.method == "POST":
        upload = request.FILES.get("archive")
        if upload is None:
            messages.error(request, _("Choose a model archive (.zip) to import."))
        else:
            try:
                version = version_services.model_import_upload(upload=upload, user=request.user)
            except version_services.VersionError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, _("%(name)s was imported; promote it to make it serve.") % {"name": version.name})
                return redirect("classifier:model_list")
        return render(request, "classifier/versions/import.html", {}, status=400)
    return render(request, "classifier/versions/import.html", {})
