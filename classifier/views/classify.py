from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from classifier import selectors


def home(request: HttpRequest) -> HttpResponse:
    """The classify page: upload a dog photo, get its breed."""
    return render(
        request,
        "classifier/home.html",
        {"active_model": selectors.model_get_active()},
    )
