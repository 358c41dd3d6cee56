"""Refuse oversized request bodies before anything reads them (the first middleware).

Every route has a body budget: the photo routes the image cap times the batch size, the dataset
upload and model import routes the archive cap, every other route the form cap (DATA_UPLOAD_MAX_MEMORY_SIZE);
each plus a margin for the multipart framing. A request whose ``Content-Length`` is over its
route's budget gets 413 at once, before the CSRF check or a view parses a byte of it. A chunked
request (no ``Content-Length``) is counted as it streams into a spooled temporary file and refused
as soon as it passes the budget; under it, Django reads the spooled copy as an ordinary body.

Shared (web/); imports Django only.
"""

from __future__ import annotations

import tempfile

from django.conf import settings
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.translation import gettext as _

FRAMING = 1024 * 1024  # multipart boundaries, headers and the small form fields beside the files
CHUNK = 64 * 1024
PHOTO_ROUTES = {"api:predict"}
ONE_PHOTO_ROUTES = {"classifier:home"}
ARCHIVE_ROUTES = {"api:dataset_list", "classifier:dataset_create", "api:model_import", "classifier:model_import"}


def body_budget(path: str) -> int:
    """The largest body, in bytes, that the route at ``path`` accepts."""
    try:
        name = resolve(path).view_name
    except Resolver404:
        name = ""
    if name in PHOTO_ROUTES:
        return settings.BREEDLAB_MAX_IMAGE_BYTES * settings.BREEDLAB_MAX_BATCH_IMAGES + FRAMING
    if name in ONE_PHOTO_ROUTES:
        return settings.BREEDLAB_MAX_IMAGE_BYTES + FRAMING
    if name in ARCHIVE_ROUTES:
        return settings.BREEDLAB_MAX_ARCHIVE_BYTES + FRAMING
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE + FRAMING


def _too_large(request: HttpRequest, budget: int) -> HttpResponse:
    message = _("The request is too large: at most %(mb)s MB here.") % {"mb": f"{budget / 2**20:.1f}"}
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": message}, status=413)
    else:
        response = HttpResponse(message, status=413, content_type="text/plain; charset=utf-8")
    response["Connection"] = "close"  # the unread rest of the body must not be taken for a next request
    return response


class BodyLimitMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return self.get_response(request)
        budget = body_budget(request.path_info)
        raw_length = request.META.get("CONTENT_LENGTH") or ""
        chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
        if raw_length.strip():
            try:
                length = int(raw_length)
            except ValueError:
                length = -1
            if length < 0:
                return HttpResponse(_("Bad Content-Length."), status=400, content_type="text/plain; charset=utf-8")
            if length > budget:
                return _too_large(request, budget)
        elif chunked:
            spooled = self._spool(request, budget)
            if spooled is None:
                return _too_large(request, budget)
            size = spooled.tell()
            spooled.seek(0)
            request.META["CONTENT_LENGTH"] = str(size)
            request._stream = LimitedStream(spooled, size)
            request._read_started = False
        return self.get_response(request)

    @staticmethod
    def _spool(request: HttpRequest, budget: int):
        """The chunked body in a spooled file, or None once it passes ``budget`` (counted as it streams)."""
        stream = request.environ["wsgi.input"]
        spooled = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)
        total = 0
        while True:
            chunk = stream.read(CHUNK)
            if not chunk:
                return spooled
            total += len(chunk)
            if total > budget:
                spooled.close()
                return None
            spooled.write(chunk)
