"""Reads used by views and the API. Writes live in services."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db.models import QuerySet

from classifier.models import Dataset, Feedback, ModelVersion, Prediction, TrainingRun


def model_get_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).select_related("run").first()


def model_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("run", "run__dataset", "promoted_by")


def run_list(*, status: str | None = None, backbone: str | None = None, dataset_id: int | None = None) -> QuerySet[TrainingRun]:
    runs = TrainingRun.objects.select_related("dataset", "created_by")
    if status:
        runs = runs.filter(status=status)
    if backbone:
        runs = runs.filter(config__backbone=backbone)
    if dataset_id:
        runs = runs.filter(dataset_id=dataset_id)
    return runs


def dataset_get_by_ref(ref: str | int) -> Dataset:
    """A dataset by id, NAME (its newest ready version) or NAME:vN. Raises Dataset.DoesNotExist."""
    value = str(ref).strip()
    if value.isdigit():
        return Dataset.objects.get(pk=int(value))
    name, _sep, version = value.rpartition(":v")
    if name and version.isdigit():
        return Dataset.objects.get(name=name, version=int(version))
    found = Dataset.objects.filter(name=value, status=Dataset.Status.READY).order_by("-version").first()
    if found is None:
        raise Dataset.DoesNotExist(value)
    return found


def run_backbones() -> list[str]:
    """Backbones that at least one run used (for the run list's filter)."""
    names = TrainingRun.objects.values_list("config__backbone", flat=True).distinct()
    return sorted({str(name) for name in names if name})


def runs_by_ids(ids: list[int]) -> list[TrainingRun]:
    """The runs with these ids, in the order given (unknown ids are left out)."""
    found = TrainingRun.objects.select_related("dataset", "created_by").in_bulk(ids)
    return [found[i] for i in ids if i in found]


def run_model_version(run: TrainingRun) -> ModelVersion | None:
    return ModelVersion.objects.filter(run=run).first()


def run_validation_report(run: TrainingRun) -> dict | None:
    """The run's validation.json (confusion matrix, per-class metrics, per-image predictions), or None."""
    import json

    if not run.out_dir:
        return None
    path = Path(settings.RUNS_ROOT) / run.out_dir / "validation.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None


def per_class_rows(report: dict) -> list[dict]:
    """Per-class precision/recall/f1/support rows, worst recall first."""
    rows = [{"name": name, **values} for name, values in (report.get("per_class") or {}).items()]
    return sorted(rows, key=lambda row: (row.get("recall", 0.0), row["name"]))


def dataset_list() -> QuerySet[Dataset]:
    return Dataset.objects.select_related("created_by")


def dataset_list_usable() -> QuerySet[Dataset]:
    """Datasets a run may train on: imported and without blocking problems (``report["problems"]``)."""
    return Dataset.objects.filter(status=Dataset.Status.READY, report__problems=[]).select_related("created_by")


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


def dataset_feedback_mergeable(dataset: Dataset) -> list[tuple[Feedback, str]]:
    """Unmerged corrections with a stored photo whose breed is one of the dataset's classes,
    each with the class folder it belongs to (labels match ignoring case, spaces and underscores)."""
    classes = {_label_key(name): name for name in dataset.classes}
    candidates = (
        Feedback.objects.filter(merged_into__isnull=True)
        .exclude(prediction__image="")
        .select_related("prediction")
        .order_by("id")
    )
    return [(item, classes[_label_key(item.correct_label)]) for item in candidates if _label_key(item.correct_label) in classes]


def prediction_recent(*, limit: int = 10) -> QuerySet[Prediction]:
    return Prediction.objects.select_related("model_version")[:limit]
