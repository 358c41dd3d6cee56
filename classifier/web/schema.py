"""The OpenAPI schema class: endpoints that anyone may call are marked as needing no authentication.

drf-spectacular lists every authentication method on every operation (with an empty alternative
for AllowAny); here an operation whose permissions are all AllowAny gets ``security: []``, which
OpenAPI reads as "no authentication", so generated clients send no credentials.

Imports nothing of classifier/ or training/ (libraries only).
"""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from rest_framework.permissions import AllowAny


class BreedlabAutoSchema(AutoSchema):
    def _public(self) -> bool:
        permissions = self.view.get_permissions()
        return bool(permissions) and all(isinstance(p, AllowAny) for p in permissions)

    def get_operation(self, *args, **kwargs):
        operation = super().get_operation(*args, **kwargs)
        if operation is not None and self._public():
            operation["security"] = []  # explicit: no authentication (drf-spectacular would omit the key)
        return operation
