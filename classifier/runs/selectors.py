"""Reads about training runs: filtered lists, comparisons, a run's validation report.

Imports classifier.models only.
"""

from __future__ import annotations

import functools
import json
import operator
from pathlib import Path

from django.conf import settings
from django.db.models import Q, QuerySet

from classifier.models import TrainingRun
from classifier.storage import remote
from training.objectstore import StorageError

# Where a run names a network: its configuration, its plan (an auto run's choice while it runs), its results.
BACKBONE_PATHS = ("config__backbone", "progress_detail__plan__backbone", "result__metrics__backbone")


def run_list(*, status: str | None = None, backbone: str | None = None, dataset_id: int | None = None) -> QuerySet[TrainingRun]:
    """Runs, newest first. ``backbone``: the runs configured with it or that used it (an ``auto``
    run once its plan or results name its choice); ``backbone="auto"``: every run that left the choice to the run."""
    runs = TrainingRun.objects.filter(deleted_at__isnull=True).select_related("dataset", "created_by")
    if status:
        runs = runs.filter(status=status)
    if backbone:
        runs = runs.filter(functools.reduce(operator.or_, (Q(**{path: backbone}) for path in BACKBONE_PATHS)))
    if dataset_id:
        runs = runs.filter(dataset_id=dataset_id)
    return runs


def run_backbones() -> list[str]:
    """Backbones that at least one run was configured with (``auto`` among them) or used (for the run list's filter)."""
    names = (TrainingRun.objects.values_list(path, flat=True).distinct() for path in BACKBONE_PATHS)
    return sorted({str(name) for found in names for name in found if name})


def runs_by_ids(ids: list[int]) -> list[TrainingRun]:
    """The runs with these ids, in the order given (unknown ids are left out)."""
    found = TrainingRun.objects.select_related("dataset", "created_by").in_bulk(ids)
    return [found[i] for i in ids if i in found]


def run_validation_report(run: TrainingRun) -> dict | None:
    """The run's validation.json (confusion matrix, per-class metrics, per-image predictions), or None."""
    if not run.out_dir:
        return None
    try:
        # With object storage a finished run's folder is downloaded once; a running one is not fetched.
        folder = remote.run_local(run.out_dir) if run.status == TrainingRun.Status.SUCCEEDED else Path(settings.RUNS_ROOT) / run.out_dir
        report = json.loads((folder / "validation.json").read_text())
    except (OSError, ValueError, StorageError):
        return None
    return report if isinstance(report, dict) else None


def per_class_rows(report: dict) -> list[dict]:
    """Per-class precision/recall/f1/support rows in the confusion matrix's class order
    (``report["classes"]``; classes it does not list follow by name)."""
    rows = [{"name": name, **values} for name, values in (report.get("per_class") or {}).items()]
    order = {name: i for i, name in enumerate(report.get("classes") or [])}
    return sorted(rows, key=lambda row: (order.get(row["name"], len(order)), row["name"]))
