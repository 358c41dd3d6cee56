"""Training pages: the run list, a run (live), its validation images, comparison, the new-run form.

Thin: it parses the request, calls services and selectors, and renders. Imports classifier.models,
classifier.runs.charts, classifier.runs.config, classifier.runs.forms, classifier.runs.selectors,
classifier.runs.services, classifier.versions.selectors, classifier.versions.services,
classifier.web.access (besides Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from classifier.models import Dataset, TrainingRun
from classifier.runs import charts, display, selectors
from classifier.runs import services as run_services
from classifier.runs.config import RunConfigError
from classifier.runs.forms import RunForm
from classifier.versions import selectors as versions_selectors
from classifier.versions import services as version_services
from classifier.web.access import staff_required
from classifier.web.names import class_display_name

RUNS_PER_PAGE = 25
GALLERY_LIMIT = 48
POLL_SECONDS = 2



def chart_labels() -> dict[str, str]:
    return {
        "loss": _("Loss"),
        "accuracy": _("Accuracy"),
        "epoch": _("Epoch"),
        "train": _("train"),
        "validation": _("validation"),
        "unfreeze": _("unfreeze"),
        "predicted": _("Predicted"),
        "true": _("True"),
        "head": _("new head"),
        "finetune": _("fine-tuning"),
        "dotted_train": _("dotted: train loss"),
    }


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# The list and the form
# ---------------------------------------------------------------------------------------------
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    """Training history: every run, newest first, filtered by status, backbone and dataset."""
    status = request.GET.get("status") or None
    if status not in TrainingRun.Status.values:
        status = None
    backbone = request.GET.get("backbone") or None
    dataset_id = _int_or_none(request.GET.get("dataset"))
    runs = selectors.run_list(status=status, backbone=backbone, dataset_id=dataset_id)
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    filters = {k: v for k, v in (("status", status), ("backbone", backbone), ("dataset", dataset_id)) if v}
    return render(
        request,
        "classifier/runs/list.html",
        {
            "page": page,
            "statuses": TrainingRun.Status.choices,
            "backbones": selectors.run_backbones(),
            "datasets": Dataset.objects.filter(runs__isnull=False).distinct().order_by("name", "-version"),
            "current_status": status,
            "current_backbone": backbone,
            "current_dataset": dataset_id,
            "filter_query": urlencode(filters),
            "any_active": any(run.status in TrainingRun.ACTIVE_STATES for run in page.object_list),
        },
    )


@staff_required
@require_http_methods(["GET", "POST"])
def run_new(request: HttpRequest) -> HttpResponse:
    """Start a run. ``?dataset=<id>`` preselects a dataset, ``?from=<run id>`` copies a run's config."""
    if request.method == "POST":
        form = RunForm(request.POST)
        if form.is_valid():
            try:
                run = run_services.run_create(
                    dataset=form.cleaned_data["dataset"],
                    config=form.config,
                    created_by=request.user,
                    promote_when_done=form.cleaned_data["promote_when_done"],
                )
            except (run_services.RunError, RunConfigError) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, _("Run #%(id)s was created.") % {"id": run.pk})
                return redirect(run)
    else:
        initial: dict[str, Any] = {}
        source = _int_or_none(request.GET.get("from"))
        if source:
            original = get_object_or_404(TrainingRun, pk=source)
            initial.update(RunForm.initial_from_config(original.config))
            initial["dataset"] = original.dataset_id
            initial["promote_when_done"] = original.promote_when_done
        dataset_id = _int_or_none(request.GET.get("dataset"))
        if dataset_id:
            initial["dataset"] = dataset_id
        form = RunForm(initial=initial)
    return render(request, "classifier/runs/form.html", {"form": form, "recipe_rates": RunForm.recipe_rates()})


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------
def _get_run(pk: int) -> TrainingRun:
    return get_object_or_404(TrainingRun.objects.select_related("dataset", "created_by"), pk=pk)


def stage_labels() -> dict[str, str]:
    """What the live page calls each stage the reporter records (unknown names show as they are)."""
    return {
        "decode": _("Reading the photos"),
        "features": _("Passing the photos through the frozen network"),
        "head": _("Training the new head"),
        "finetune": _("Fine-tuning the network"),
        "calibrate": _("Calibrating “not a dog” and “not sure”"),
    }


def phase_label(phase: str) -> str:
    return {"head": _("new head"), "finetune": _("fine-tuning")}.get(phase, phase)


def live_stages(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages the reporter stored, in order, with a label, a fraction and a state."""
    labels = stage_labels()
    out = []
    for stage in detail.get("stages") or []:
        done, total = stage.get("done") or 0, stage.get("total") or 0
        finished = bool(stage.get("finished"))
        out.append(
            {
                "name": stage.get("name"),
                "label": labels.get(stage.get("name"), stage.get("name")),
                "done": done,
                "total": total,
                "fraction": 1.0 if finished else (min(1.0, done / total) if total else None),
                "eta_seconds": None if finished else stage.get("eta_seconds"),
                "state": "done" if finished else "active",
            }
        )
    return out


def _live_context(run: TrainingRun) -> dict[str, Any]:
    epochs = list(run.epochs.all())
    for epoch in epochs:
        epoch.phase_label = phase_label(epoch.phase)
    detail = run.progress_detail or {}
    stages = live_stages(detail) if run.status == TrainingRun.Status.RUNNING else []
    return {
        "run": run,
        "epochs": epochs,
        "detail": detail,
        "stages": stages,
        "current_stage": stages[-1] if stages else None,
        "poll_seconds": POLL_SECONDS,
        "is_active": run.status in TrainingRun.ACTIVE_STATES,
    }


def _confusion(run: TrainingRun, report: dict[str, Any]) -> str | None:
    matrix, classes = report.get("confusion_matrix"), report.get("classes")
    if not matrix or not classes:
        return None
    base = reverse("classifier:run_validation", args=[run.pk])

    def cell_url(i: int, j: int) -> str:
        return f"{base}?{urlencode({'true': classes[i], 'pred': classes[j]})}"

    names = [class_display_name(name) for name in classes]
    svg = charts.cached_svg(
        "confusion", str(run.pk), {"matrix": matrix, "classes": names},
        lambda: charts.confusion_svg(matrix, names, cell_url=cell_url, labels=chart_labels()),
    )
    return mark_safe(svg)  # noqa: S308


@require_GET
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run(pk)
    context = _live_context(run)
    report = selectors.run_validation_report(run) if run.status == TrainingRun.Status.SUCCEEDED else None
    version = versions_selectors.run_model_version(run)
    context.update(
        {
            "report": report,
            "confusion_svg": _confusion(run, report) if report else None,
            "per_class": selectors.per_class_rows(report) if report else [],
            "misclassified": [p for p in (report or {}).get("predictions", []) if not p.get("correct")][:GALLERY_LIMIT],
            "misclassified_total": sum(1 for p in (report or {}).get("predictions", []) if not p.get("correct")),
            "version": version,
            "config_groups": display.config_groups([run.config], backbones=[run.backbone], image_sizes=[run.image_size]),
            "metrics": (run.result or {}).get("metrics", {}),
            "photos_visible": _photos_visible(request),
            "plan": (run.result or {}).get("plan") or (run.progress_detail or {}).get("plan"),
            "notes": (run.result or {}).get("notes", []),
            "promotion": (run.result or {}).get("promotion"),
            "calibration": (run.result or {}).get("calibration"),
            "resumable": request.user.is_staff and run_services.run_resumable(run),
        }
    )
    return render(request, "classifier/runs/detail.html", context)


@require_GET
def run_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The live part of the run page (htmx polls it while the run is queued or running).

    When the run has ended since the page was drawn (``?was=running``), htmx reloads the page
    once so the final results appear.
    """
    run = _get_run(pk)
    response = render(request, "classifier/runs/_live.html", _live_context(run))
    if request.GET.get("was") in TrainingRun.ACTIVE_STATES and run.is_final:
        response["HX-Refresh"] = "true"
    return response


@require_GET
def run_curves(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run(pk)
    epochs = list(run.epochs.values("phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc"))
    stacked = request.GET.get("layout") == "stacked"  # the phone's picture: one panel above the other
    svg = charts.cached_svg(
        "curves-stacked" if stacked else "curves", str(run.pk), epochs,
        lambda: charts.curves_svg(epochs, labels=chart_labels(), stacked=stacked),
    )
    response = HttpResponse(svg, content_type="image/svg+xml")
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response["Cache-Control"] = "private, max-age=3600" if request.GET.get("n") else "no-cache"
    return response


@require_GET
def run_validation(request: HttpRequest, pk: int) -> HttpResponse:
    """The validation images behind a confusion-matrix cell (``?true=<class>&pred=<class>``)."""
    run = _get_run(pk)
    report = selectors.run_validation_report(run)
    if report is None:
        raise Http404(_("This run has no validation results."))
    true, pred = request.GET.get("true") or None, request.GET.get("pred") or None
    only_wrong = request.GET.get("wrong") == "1"
    items = [
        p
        for p in report.get("predictions", [])
        if (true is None or p["true"] == true) and (pred is None or p["pred"] == pred) and not (only_wrong and p["correct"])
    ]
    page = Paginator(items, 60).get_page(request.GET.get("page"))
    query = urlencode({k: v for k, v in (("true", true), ("pred", pred), ("wrong", "1" if only_wrong else None)) if v})
    return render(
        request,
        "classifier/runs/validation.html",
        {"run": run, "page": page, "true": true, "pred": pred, "only_wrong": only_wrong, "filter_query": query,
         "photos_visible": _photos_visible(request)},
    )


def _photos_visible(request: HttpRequest) -> bool:
    """Dataset photos are staff-only unless BREEDLAB_PUBLIC_DATASET_IMAGES (the dataset views decide the same)."""
    return bool(settings.BREEDLAB_PUBLIC_DATASET_IMAGES or request.user.is_staff)


# ---------------------------------------------------------------------------------------------
# Actions (staff, POST with CSRF)
# ---------------------------------------------------------------------------------------------
@staff_required
@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run(pk)
    try:
        run = run_services.run_cancel(run=run)
    except run_services.RunError as exc:
        messages.error(request, str(exc))
    else:
        if run.status == TrainingRun.Status.CANCELLED:
            messages.success(request, _("Run #%(id)s is cancelled.") % {"id": run.pk})
        else:
            messages.info(request, _("Run #%(id)s stops after its current batch and keeps a checkpoint.") % {"id": run.pk})
    return redirect(run)


@staff_required
@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run(pk)
    try:
        run = run_services.run_resume(run=run)
    except run_services.RunError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("Run #%(id)s is queued again and goes on from its last saved epoch.") % {"id": run.pk})
    return redirect(run)


@staff_required
@require_POST
def run_rerun(request: HttpRequest, pk: int) -> HttpResponse:
    original = _get_run(pk)
    try:
        run = run_services.run_rerun(run=original, created_by=request.user)
    except (run_services.RunError, RunConfigError) as exc:
        messages.error(request, str(exc))
        return redirect(original)
    messages.success(request, _("Run #%(id)s was created with the configuration of run #%(old)s.") % {"id": run.pk, "old": pk})
    return redirect(run)


@staff_required
@require_POST
def run_promote(request: HttpRequest, pk: int) -> HttpResponse:
    run = _get_run(pk)
    version = versions_selectors.run_model_version(run)
    if version is None:
        messages.error(request, _("Run #%(id)s has no model to promote.") % {"id": run.pk})
        return redirect(run)
    try:
        version_services.model_promote(version=version, user=request.user)
    except version_services.VersionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, _("%(name)s now serves.") % {"name": version.name})
    return redirect(run)


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------
def _compare_ids(request: HttpRequest) -> list[int]:
    raw = request.GET.getlist("ids")
    ids: list[int] = []
    for chunk in raw:
        for part in chunk.split(","):
            value = _int_or_none(part.strip())
            if value is not None and value not in ids:
                ids.append(value)
    return ids[:10]


@require_GET
def run_compare(request: HttpRequest) -> HttpResponse:
    """Curves of two or more runs overlaid and their configurations side by side."""
    ids = _compare_ids(request)
    runs = selectors.runs_by_ids(ids)
    error = None
    if len(runs) < 2:
        error = _("Choose at least two runs to compare, e.g. /runs/compare/?ids=1,2.")
    svg = None
    if len(runs) >= 2:
        series = [(f"#{run.pk} {display.optimizer_name(run.optimizer)}", list(run.epochs.values("phase", "train_loss", "val_loss", "val_acc"))) for run in runs]
        owner = ",".join(str(run.pk) for run in runs)
        svg = {
            layout: mark_safe(  # noqa: S308
                charts.cached_svg(f"compare-{layout}", owner, series,
                                  lambda stacked=(layout == "stacked"): charts.compare_svg(series, labels=chart_labels(), stacked=stacked))
            )
            for layout in ("wide", "stacked")
        }
    return render(
        request,
        "classifier/runs/compare.html",
        {"runs": runs, "config_groups": display.config_groups([run.config for run in runs], backbones=[run.backbone for run in runs], image_sizes=[run.image_size for run in runs]), "compare_svg": svg, "error": error, "ids": ",".join(str(r.pk) for r in runs)},
        status=400 if error and ids else 200,
    )
