from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from classifier import selectors


def dataset_list(request: HttpRequest) -> HttpResponse:
    return render(request, "classifier/dataset_list.html", {"datasets": selectors.dataset_list()})
