from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from classifier import selectors


def model_list(request: HttpRequest) -> HttpResponse:
    """Model versions with their metrics and which one serves."""
    return render(request, "classifier/model_list.html", {"versions": selectors.model_list()})
