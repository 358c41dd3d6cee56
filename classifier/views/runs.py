from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from classifier import selectors
from classifier.models import TrainingRun


def run_list(request: HttpRequest) -> HttpResponse:
    """Training history: every run, newest first, with filters."""
    status = request.GET.get("status") or None
    if status not in TrainingRun.Status.values:
        status = None
    runs = selectors.run_list(status=status)
    page = Paginator(runs, 25).get_page(request.GET.get("page"))
    return render(
        request,
        "classifier/run_list.html",
        {"page": page, "statuses": TrainingRun.Status.choices, "current_status": status},
    )


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("dataset", "created_by"), pk=pk)
    return render(request, "classifier/run_detail.html", {"run": run, "epochs": run.epochs.all()})
