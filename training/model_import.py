"""Read a Breedlab model archive back, validating it before anything of it is used.

Zip bounds, known file names only (pickled weights are refused by name and never opened),
checksums against the manifest, safetensors weights whose names and shapes must fit the named
backbone, labels, and a forward pass on the stored sample that must agree with the recorded
outputs, through both the weights and the ONNX graph. ``read_archive`` writes a run-like folder.

Imports: torch, safetensors, onnxruntime (lazily), training.archive / backbones / checkpoint.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from training import checkpoint as ckpt
from training.archive import (
    AGREEMENT_TOLERANCE,
    ALLOWED,
    ARCHIVE_FORMAT,
    CALIBRATION_FILE,
    MAX_MEMBER_RATIO,
    MAX_MEMBERS,
    PICKLE_SUFFIXES,
    REQUIRED,
    preprocess_numpy,
    sha256_hex,
)
from training.backbones import get_backbone
from training.errors import TrainingError


class ArchiveError(TrainingError):
    """The archive is refused; the message says why."""


@dataclass
class ImportedModel:
    folder: Path  # a run-like folder: model.safetensors, meta.json (+ calibration.json, reports)
    meta: dict[str, Any]
    class_names: list[str]
    manifest: dict[str, Any]
    card: dict[str, Any]


def _read_members(path: Path, *, max_bytes: int) -> dict[str, bytes]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"This is not a zip archive ({exc}).") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"The archive holds {len(infos)} entries; a model archive has at most {MAX_MEMBERS}.")
        total = 0
        for info in infos:
            name = info.filename
            if name.lower().endswith(PICKLE_SUFFIXES):
                raise ArchiveError(f"{name}: pickled weights are refused; a model archive carries model.safetensors only.")
            if name not in ALLOWED:
                raise ArchiveError(f"{name!r} is not a file of a Breedlab model archive (expected: {', '.join(sorted(ALLOWED))}).")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"{name} is encrypted.")
            total += info.file_size
            if total > max_bytes:
                raise ArchiveError(f"The archive unpacks to more than {max_bytes} bytes.")
            if info.compress_size and info.file_size / info.compress_size > MAX_MEMBER_RATIO and info.file_size > 1 << 20:
                raise ArchiveError(f"{name} is compressed {info.file_size // info.compress_size}:1, like a zip bomb.")
        missing = [n for n in REQUIRED if n not in {i.filename for i in infos}]
        if missing:
            raise ArchiveError(f"The archive lacks {', '.join(missing)}: it is not a Breedlab model export.")
        members = {}
        for info in infos:
            with zf.open(info) as f:
                data = f.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise ArchiveError(f"{info.filename}'s size does not match the archive's directory.")
            members[info.filename] = data
    return members


def _json(members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{name} is not valid JSON ({exc}).") from None


def read_archive(path: str | Path, dest: str | Path, *, max_bytes: int = 1 << 30) -> ImportedModel:
    """Validate the archive at ``path`` and write a run-like folder ``dest`` (created; removed on failure)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    members = _read_members(Path(path), max_bytes=max_bytes)
    manifest = _json(members, "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"Unknown archive format {manifest.get('format') if isinstance(manifest, dict) else manifest!r}; "
                           f"expected {ARCHIVE_FORMAT}.")
    for name, data in members.items():
        if name == "manifest.json":
            continue
        entry = (manifest.get("files") or {}).get(name)
        if not isinstance(entry, dict) or entry.get("sha256") != sha256_hex(data):
            raise ArchiveError(f"{name} does not match the manifest's checksum: the archive was altered or damaged.")

    meta = _json(members, "meta.json")
    labels = _json(members, "labels.json")
    pre = _json(members, "preprocessing.json")
    try:
        backbone = get_backbone(str(meta["backbone"]))
        class_names = [str(c) for c in meta["class_names"]]
        num_classes = int(meta["num_classes"])
        for key in ("image_size", "resize_size"):
            if int(pre[key]) != int(meta["preprocessing"][key]) or not 8 <= int(pre[key]) <= 2048:
                raise ArchiveError(f"preprocessing.json's {key} is {pre[key]!r}; meta.json says {meta['preprocessing'][key]!r}.")
        if len(pre["mean"]) != 3 or len(pre["std"]) != 3 or min(float(s) for s in pre["std"]) <= 0:
            raise ArchiveError("preprocessing.json needs three means and three positive standard deviations.")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"meta.json or preprocessing.json is incomplete ({type(exc).__name__}: {exc}).") from None
    if num_classes != len(class_names) or num_classes < 2 or len(set(class_names)) != num_classes:
        raise ArchiveError(f"meta.json lists {len(class_names)} distinct class names for {num_classes} classes.")
    if not isinstance(labels, list) or [x.get("name") if isinstance(x, dict) else None for x in labels] != class_names:
        raise ArchiveError("labels.json does not list meta.json's classes in the same order.")

    try:
        state = st_load(members["model.safetensors"])
    except (SafetensorError, ValueError, OSError) as exc:
        raise ArchiveError(f"model.safetensors is not a valid safetensors file ({exc}).") from None
    model, _ = backbone.transfer_model(num_classes, pretrained=False, dropout=float(meta.get("architecture", {}).get("dropout", 0.0)))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if set(got) != set(expected):
        extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
        raise ArchiveError(f"model.safetensors does not hold {backbone.name}'s tensors "
                           f"(missing {len(missing)}: {', '.join(missing[:3])}; unexpected {len(extra)}: {', '.join(extra[:3])}).")
    wrong = [f"{k} {got[k]} != {expected[k]}" for k in expected if got[k] != expected[k]]
    if wrong:
        raise ArchiveError(f"model.safetensors has tensors of the wrong shape for {backbone.name} with {num_classes} classes: "
                           + "; ".join(wrong[:3]))
    if any(not torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ArchiveError("model.safetensors holds NaN or infinite values.")
    model.load_state_dict(state, strict=True)
    model.eval()

    recorded = _json(members, "sample_outputs.json")
    try:
        with Image.open(io.BytesIO(members["sample.png"])) as img:
            if img.format != "PNG" or img.width * img.height > 4_000_000:
                raise ArchiveError("sample.png must be a PNG of at most 4 megapixels.")
            img.load()
            x = preprocess_numpy(img, pre)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"sample.png cannot be read ({exc}).") from None
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(x)).float(), dim=1)[0].numpy()
    try:
        want = np.asarray(recorded["probabilities"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise ArchiveError("sample_outputs.json lacks the recorded probabilities.") from None
    if want.shape != probs.shape:
        raise ArchiveError(f"sample_outputs.json records {want.size} probabilities for {num_classes} classes.")
    diff = float(np.abs(want - probs).max())
    if not diff <= AGREEMENT_TOLERANCE:
        raise ArchiveError(f"The weights do not give the recorded answer for sample.png (probabilities differ by {diff:.2g}; "
                           f"allowed {AGREEMENT_TOLERANCE}).")
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(members["model.onnx"], providers=["CPUExecutionProvider"])
        onnx_probs = session.run(["probabilities"], {"images": x})[0][0]
    except Exception as exc:  # noqa: BLE001 - any onnxruntime failure means the graph is unusable
        raise ArchiveError(f"model.onnx cannot be run ({type(exc).__name__}: {str(exc)[:200]}).") from None
    diff = float(np.abs(onnx_probs - probs).max())
    if not diff <= AGREEMENT_TOLERANCE:
        raise ArchiveError(f"model.onnx and model.safetensors disagree on sample.png (by {diff:.2g}).")

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    try:
        for name in ("model_card.json", "model_card.md", "labels.json", ckpt.VALIDATION_FILE, ckpt.TEST_FILE, ckpt.HISTORY_FILE):
            if name in members:
                if name.endswith(".json"):
                    _json(members, name)
                ckpt.atomic_write_bytes(dest / name, members[name])
        if CALIBRATION_FILE in members:
            cal = _json(members, CALIBRATION_FILE)
            try:
                float(cal["thresholds"]["dog_mass"]), float(cal["thresholds"]["confidence"])
            except (KeyError, TypeError, ValueError):
                raise ArchiveError("calibration.json lacks numeric thresholds.") from None
            ckpt.atomic_write_bytes(dest / CALIBRATION_FILE, members[CALIBRATION_FILE])
        meta = {**meta, "imported": {"manifest": manifest, "sample_diff": diff}}
        ckpt.save_tensors(dest / ckpt.MODEL_FILE, state, metadata={"format": "breedlab-transfer", "version": str(ckpt.FORMAT_VERSION)})
        ckpt.atomic_write_json(dest / ckpt.META_FILE, meta)  # last: the folder is complete
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    card = _json(members, "model_card.json") if "model_card.json" in members else {}
    return ImportedModel(dest, meta, class_names, manifest, card)

