"""Run directories, written atomically (temp file, fsync, os.replace): a crash never leaves a
half-written file behind.

A finished run directory holds::

    model.safetensors   the TransferModel weights (no pickle)
    meta.json           backbone, class names, preprocessing, config, metrics, library versions
    history.json        one entry per epoch
    validation.json     confusion matrix, per-class precision/recall, per-image predictions
    test.json           the same for the test split (scored once, after every choice was made)

While training, ``checkpoint/`` holds the state after the last completed epoch
(``last.safetensors`` with model and optimizer tensors, ``last.json`` with everything else)
and ``best.safetensors`` (the best weights so far, for early stopping).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from training.errors import TrainingError
from training.files import atomic_write_bytes, atomic_write_json  # noqa: F401 - re-exported: the run directory's writers

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
HISTORY_FILE = "history.json"
VALIDATION_FILE = "validation.json"
TEST_FILE = "test.json"
CHECKPOINT_DIR = "checkpoint"
FORMAT_VERSION = 1


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomically save tensors as safetensors (tensors are made contiguous CPU copies)."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, st_save(clean, metadata=metadata))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    return st_load(Path(path).read_bytes())


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def library_versions() -> dict[str, str]:
    import numpy
    import safetensors
    import timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }


# ---------------------------------------------------------------------------------------------
# Optimizer state <-> (tensors, JSON)
# ---------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def optimizer_state_to_flat(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and a JSON-safe rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = _jsonable(value)
    return tensors, {"param_groups": _jsonable(state["param_groups"]), "scalars": scalars}


def optimizer_state_from_flat(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in rest.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": rest["param_groups"]}


# ---------------------------------------------------------------------------------------------
# Training checkpoints
# ---------------------------------------------------------------------------------------------
def save_training_checkpoint(
    out_dir: Path,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any] | None,
    progress: dict[str, Any],
) -> None:
    """Write ``checkpoint/last.safetensors`` then ``checkpoint/last.json`` (the JSON is the commit point)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    extra: dict[str, Any] = {}
    if optimizer_state is not None:
        opt_tensors, extra = optimizer_state_to_flat(optimizer_state)
        tensors.update(opt_tensors)
    step = int(progress.get("step", 0))
    weights_name = f"last-{step % 2}.safetensors"  # alternate so the committed file is never overwritten
    save_tensors(folder / weights_name, tensors)
    atomic_write_json(
        folder / "last.json",
        {"format": FORMAT_VERSION, "weights": weights_name, "optimizer": extra or None, **progress},
    )


def load_training_checkpoint(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]] | None:
    """``(model_state, optimizer_state, progress)`` from ``checkpoint/``, or None when there is none."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    if not (folder / "last.json").is_file():
        return None
    try:
        progress = read_json(folder / "last.json")
        tensors = load_tensors(folder / progress["weights"])
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"The checkpoint in {folder} cannot be read ({exc}); start the run again without resume.") from None
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    optimizer = None
    if progress.get("optimizer"):
        optimizer = optimizer_state_from_flat(tensors, progress["optimizer"])
    progress.pop("optimizer", None)
    progress.pop("weights", None)
    return model_state, optimizer, progress


def save_best(out_dir: Path, model_state: dict[str, torch.Tensor]) -> None:
    save_tensors(Path(out_dir) / CHECKPOINT_DIR / "best.safetensors", model_state)


def load_best(out_dir: Path) -> dict[str, torch.Tensor] | None:
    path = Path(out_dir) / CHECKPOINT_DIR / "best.safetensors"
    return load_tensors(path) if path.is_file() else None


def save_named(out_dir: Path, name: str, model_state: dict[str, torch.Tensor]) -> None:
    """Keep a named copy of the weights in the checkpoint folder (e.g. "head": the converged head)."""
    save_tensors(Path(out_dir) / CHECKPOINT_DIR / f"{name}.safetensors", model_state)


def load_named(out_dir: Path, name: str) -> dict[str, torch.Tensor] | None:
    path = Path(out_dir) / CHECKPOINT_DIR / f"{name}.safetensors"
    return load_tensors(path) if path.is_file() else None


def remove_training_checkpoint(out_dir: Path) -> None:
    folder = Path(out_dir) / CHECKPOINT_DIR
    if folder.is_dir():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


# ---------------------------------------------------------------------------------------------
# Finished runs
# ---------------------------------------------------------------------------------------------
def remove_run_files(out_dir: Path) -> None:
    """Delete a finished run's files (meta.json first, so the folder never looks complete but stale)."""
    for name in (META_FILE, MODEL_FILE, HISTORY_FILE, VALIDATION_FILE, TEST_FILE):
        (Path(out_dir) / name).unlink(missing_ok=True)


def save_run(
    out_dir: Path,
    *,
    model_state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    history: list[dict[str, Any]],
    validation: dict[str, Any] | None,
    test: dict[str, Any] | None = None,
) -> None:
    out_dir = Path(out_dir)
    save_tensors(out_dir / MODEL_FILE, model_state, metadata={"format": "breedlab-transfer", "version": str(FORMAT_VERSION)})
    atomic_write_json(out_dir / HISTORY_FILE, history)
    if validation is not None:
        atomic_write_json(out_dir / VALIDATION_FILE, validation)
    if test is not None:
        atomic_write_json(out_dir / TEST_FILE, test)
    atomic_write_json(out_dir / META_FILE, meta)  # last: a run with meta.json is complete


def load_run(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, meta)`` of a finished run directory."""
    out_dir = Path(out_dir)
    meta_path, model_path = out_dir / META_FILE, out_dir / MODEL_FILE
    if not meta_path.is_file() or not model_path.is_file():
        raise TrainingError(f"{out_dir} is not a finished run directory (needs {META_FILE} and {MODEL_FILE}).")
    try:
        meta = read_json(meta_path)
        state = load_tensors(model_path)
    except (OSError, ValueError) as exc:
        raise TrainingError(f"Cannot read the run in {out_dir}: {exc}") from None
    return state, meta
