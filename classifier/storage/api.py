"""Storage over the API (staff): sizes, soft deletion and restore.

Thin. Imports classifier.storage.selectors, classifier.storage.services, classifier.storage.views
(its item lookup), classifier.web.errors (besides Django and libraries); never another domain's
views or api.
"""

from __future__ import annotations

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from classifier.storage import selectors
from classifier.storage import services as storage_services
from classifier.storage.views import MODELS
from classifier.web.errors import error_response, get_or_404


def _item_json(item: selectors.Item) -> dict:
    return {"kind": item.kind, "id": item.obj.pk, "label": item.label, "bytes": item.bytes,
            "deleted_at": item.deleted_at, "purge_after": item.purge_after, "blocked": item.blocked or None}


class StorageView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(summary="What takes space: storage roots, dataset versions, runs and model versions with their sizes (staff)",
                   responses={200: OpenApiResponse(description="roots and items")})
    def get(self, request: Request) -> Response:
        items = selectors.storage_items()
        return Response({
            "roots": [{"name": n, "path": str(p), "bytes": b} for n, p, b in selectors.storage_roots()],
            "items": [_item_json(i) for kind in selectors.KINDS for i in items[kind]],
        })


def _lookup(kind: str, pk: int):
    if kind not in MODELS:
        return None
    return get_or_404(MODELS[kind].objects.all(), pk)


class StorageItemView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(
        summary="Delete a run, a dataset version or a model version (staff); files are removed after the grace period",
        responses={200: OpenApiResponse(description='{"deleted": true, "bytes": N, "purge_after": ...}'),
                   409: OpenApiResponse(description='{"error": ...}: why it cannot be deleted.')},
    )
    def delete(self, request: Request, kind: str, pk: int) -> Response:
        obj = _lookup(kind, pk)
        if obj is None:
            return error_response(_("Unknown kind; use run, dataset or model."), status.HTTP_404_NOT_FOUND)
        try:
            size = storage_services.item_delete(obj=obj, user=request.user)
        except storage_services.StorageError as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT)
        obj.refresh_from_db()
        return Response({"deleted": True, "bytes": size, "purge_after": selectors.purge_after(obj.deleted_at)})


class StorageRestoreView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(summary="Restore a deleted item during its grace period (staff)", request=None,
                   responses={200: OpenApiResponse(description='{"restored": true}'),
                              409: OpenApiResponse(description='{"error": ...}')})
    def post(self, request: Request, kind: str, pk: int) -> Response:
        request.data  # noqa: B018 - parse the body first: an oversized one is refused before any lookup
        obj = _lookup(kind, pk)
        if obj is None:
            return error_response(_("Unknown kind; use run, dataset or model."), status.HTTP_404_NOT_FOUND)
        try:
            storage_services.item_restore(obj=obj)
        except storage_services.StorageError as exc:
            return error_response(str(exc), status.HTTP_409_CONFLICT)
        return Response({"restored": True})
