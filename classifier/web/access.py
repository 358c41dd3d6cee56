"""Who may see a page: decorators shared by the page views.

Imports nothing of classifier/ or training/ (Django and libraries only).
"""

from __future__ import annotations

from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse


def staff_required(view):
    """Anonymous visitors go to the login page; signed-in users who are not staff get 403."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not request.user.is_staff:
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapped


def hide_from_anonymous(data: dict[str, Any], request, fields: tuple[str, ...]) -> dict[str, Any]:
    """API answers: who did what (user names, worker hostnames) only for signed-in readers."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        for name in fields:
            if name in data:
                data[name] = None
    return data
