"""Reads about datasets: lists, versions, folders and files on disk, corrections ready to merge,
whether a run can start on one, and the key of its validation split.

Used by every room's views, api and services; imports classifier.models, classifier.storage.remote
(a ready version's files come from object storage when it is configured) and
classifier.datasets.report_text (its problems in the reader's language).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from classifier.datasets.report_text import problem_sentences
from classifier.models import Dataset, Feedback
from classifier.storage import remote


def dataset_get_by_ref(ref: str | int) -> Dataset:
    """A dataset by id, NAME (its newest ready version) or NAME:vN. Raises Dataset.DoesNotExist."""
    value = str(ref).strip()
    if value.isdigit():
        return Dataset.objects.get(pk=int(value))
    name, _sep, version = value.rpartition(":v")
    if name and version.isdigit():
        return Dataset.objects.get(name=name, version=int(version))
    found = Dataset.objects.filter(name=value, status=Dataset.Status.READY, deleted_at__isnull=True).order_by("-version").first()
    if found is None:
        raise Dataset.DoesNotExist(value)
    return found


def dataset_list() -> QuerySet[Dataset]:
    return Dataset.objects.filter(deleted_at__isnull=True).select_related("created_by")


def dataset_list_usable() -> QuerySet[Dataset]:
    """Datasets a run may train on: imported and without blocking problems (``report["problems"]``)."""
    return Dataset.objects.filter(status=Dataset.Status.READY, report__problems=[], deleted_at__isnull=True).select_related(
        "created_by"
    )


def dataset_versions(dataset: Dataset) -> QuerySet[Dataset]:
    """Every version of the dataset's name, newest first."""
    return Dataset.objects.filter(name=dataset.name).select_related("parent").order_by("-version")


def dataset_folder(dataset: Dataset) -> Path:
    """The dataset's ImageFolder root, checked to lie strictly inside DATASETS_ROOT."""
    root = Path(settings.DATASETS_ROOT).resolve()
    relative = PurePosixPath(dataset.path)
    if not dataset.path or relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"Dataset {dataset.pk} has an unsafe folder {dataset.path!r}.")
    folder = (root / relative).resolve()
    if folder == root or not folder.is_relative_to(root):
        raise ValueError(f"Dataset {dataset.pk} has a folder outside the datasets root: {dataset.path!r}.")
    if dataset.status == Dataset.Status.READY:
        remote.dataset_local(dataset.path)  # with object storage: downloaded once into this host's cache
    return folder


def dataset_files_by_class(dataset: Dataset) -> dict[str, list[str]]:
    """Usable files (relative paths "<class>/<file>") per class, from the stored split."""
    files: dict[str, list[str]] = {name: [] for name in dataset.classes}
    for rel in [*dataset.split.get("train", []), *dataset.split.get("val", [])]:
        files.setdefault(rel.split("/", 1)[0], []).append(rel)
    return {name: sorted(paths) for name, paths in files.items()}


def dataset_file_path(dataset: Dataset, relpath: str) -> Path | None:
    """The file on disk for one of the dataset's usable images, or None.

    Only paths listed in the dataset's split are served (a whitelist, not a path check alone), and
    the resolved file must be a regular file inside the dataset folder, never a link out of it.
    """
    if relpath not in dataset.split.get("train", []) and relpath not in dataset.split.get("val", []):
        return None
    try:
        folder = dataset_folder(dataset)
    except ValueError:
        return None
    path = folder / relpath
    if path.is_symlink() or not path.resolve().is_relative_to(folder) or not path.is_file():
        return None
    return path


def _label_key(label: str) -> str:
    return "_".join(label.strip().lower().replace("-", " ").replace("_", " ").split())


def _mergeable_queryset():
    """Unmerged corrections that staff accepted, with a stored photo."""
    return Feedback.objects.filter(merged_into__isnull=True, review=Feedback.Review.ACCEPTED).exclude(prediction__image="")


def _matching_labels(dataset: Dataset) -> dict[str, str]:
    """{correction label: class folder} for the labels of mergeable corrections that name one of
    the dataset's classes (ignoring case, spaces and underscores). One grouped query: as many rows
    as distinct labels, never one per correction."""
    classes = {_label_key(name): name for name in dataset.classes}
    labels = _mergeable_queryset().values_list("correct_label", flat=True).distinct().order_by()
    return {label: classes[_label_key(label)] for label in labels if _label_key(label) in classes}


def dataset_feedback_mergeable_count(dataset: Dataset) -> int:
    labels = _matching_labels(dataset)
    return _mergeable_queryset().filter(correct_label__in=list(labels)).count() if labels else 0


def dataset_feedback_mergeable(dataset: Dataset) -> list[tuple[Feedback, str]]:
    """Accepted, unmerged corrections with a stored photo whose breed is one of the dataset's
    classes, each with the class folder it belongs to (labels match ignoring case, spaces and underscores)."""
    labels = _matching_labels(dataset)
    if not labels:
        return []
    items = _mergeable_queryset().filter(correct_label__in=list(labels)).select_related("prediction").order_by("id")
    return [(item, labels[item.correct_label]) for item in items]


def dataset_blocking_reason(dataset: Dataset) -> str | None:
    """Why a run cannot start on ``dataset`` (None when it can)."""
    if dataset.status != Dataset.Status.READY:
        return _("Dataset %(dataset)s is not ready (status: %(status)s).") % {
            "dataset": dataset, "status": dataset.get_status_display()}
    if dataset.problems:
        return _("Dataset %(dataset)s has problems: %(problems)s") % {"dataset": dataset, "problems": "; ".join(problem_sentences(dataset.report))}
    split = dataset.split or {}
    if not split.get("train") or not split.get("val"):
        return _("Dataset %(dataset)s has no train/validation split yet.") % {"dataset": dataset}
    return None


def split_key(dataset: Dataset) -> str:
    """Identifies a validation split: models validated on equal keys are directly comparable."""
    val = sorted(str(p) for p in (dataset.split or {}).get("val", []))
    return hashlib.sha256(json.dumps([dataset.path, val]).encode()).hexdigest()[:16]
