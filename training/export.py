"""Export a finished run as one portable archive (see ``training.archive`` for what it holds).

An exported model is meant to be used outside Breedlab with onnxruntime, Pillow and numpy alone:
``export_model`` builds the graph the server uses (the fine-tuned branch and the pretrained
network's dog mass sharing their untouched stages), records what it answers for a sample photo,
and writes the zip atomically.

Imports: torch, training.archive / backbones / checkpoint / predict; nothing of classifier/ or Django.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from training import checkpoint as ckpt
from training.archive import (
    ARCHIVE_FORMAT,
    CALIBRATION_FILE,
    DEFAULT_THRESHOLDS,
    display_name,
    model_card,
    readme_text,
    sample_outputs,
    sha256_hex,
)
from training.backbones import get_backbone, imagenet_dog_indices
from training.errors import TrainingError
from training.files import atomic_path


# ---------------------------------------------------------------------------------------------
# The exported graph
# ---------------------------------------------------------------------------------------------
class ExportNet(nn.Module):
    """Images -> softmax probabilities, and the pretrained head's mass on its dog classes.

    Stages that fine-tuning left untouched run once for both branches (as in the server's graph).
    """

    def __init__(self, fine, base_split, dog_indices: Sequence[int]) -> None:
        super().__init__()
        stages = list(fine.stages)
        k = 0
        if base_split is not None:
            for a, b in zip(stages, base_split.stages):
                sa, sb = a.state_dict(), b.state_dict()
                if list(sa) != list(sb) or any(sa[n].shape != sb[n].shape or not torch.equal(sa[n], sb[n]) for n in sa):
                    break
                k += 1
        self.prefix = nn.Sequential(*stages[:k])
        self.fine = nn.Sequential(*stages[k:], fine.dropout, fine.head)
        self.base = nn.Sequential(*base_split.stages[k:], base_split.classifier) if base_split is not None else None
        self.register_buffer("dog_mask", torch.zeros(0))
        if base_split is not None:
            mask = torch.zeros(base_split.classifier.out_features)
            mask[list(dog_indices)] = 1.0
            self.dog_mask = mask

    def forward(self, x: torch.Tensor):
        mid = self.prefix(x)
        probs = torch.softmax(self.fine(mid).float(), dim=1)
        if self.base is None:
            return probs
        return probs, (torch.softmax(self.base(mid).float(), dim=1) * self.dog_mask).sum(dim=1)


def _base_split(backbone):
    try:
        return backbone.split(backbone.build(pretrained=True))
    except Exception:  # noqa: BLE001 - weights unavailable here: the graph has no dog_mass output
        return None


def _dog_indices(backbone) -> list[int]:
    if backbone.original_task == "imagenet":
        return sorted(imagenet_dog_indices())
    if backbone.original_task == "cifar10":
        return [5]
    return []


def export_onnx(net: ExportNet, path: Path, *, image_size: int) -> list[str]:
    outputs = ["probabilities", "dog_mass"] if net.base is not None else ["probabilities"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's dynamic 'same' padding: TracerWarnings for a fixed input size
        torch.onnx.export(
            net.eval(), (torch.zeros(1, 3, image_size, image_size),), str(path), input_names=["images"],
            output_names=outputs, dynamic_axes={"images": {0: "n"}, **{o: {0: "n"} for o in outputs}},
            opset_version=17, dynamo=False,
        )
    return outputs



# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    size: int
    outputs: list[str]
    top5_sample: list[tuple[str, float]]


def _sample_image(run_dir: Path, meta: dict[str, Any], sample: str | Path | None) -> Image.Image:
    """The photo stored in the archive: the given one, else the first readable validation photo,
    else a fixed synthetic picture. At most 320 px on its longer side, RGB."""
    candidates: list[Path] = [Path(sample)] if sample else []
    if not sample:
        try:
            validation = ckpt.read_json(run_dir / ckpt.VALIDATION_FILE)
            root = Path(validation.get("root") or meta.get("config", {}).get("data_dir") or ".")
            for item in (validation.get("images") or validation.get("predictions") or [])[:5]:
                rel = item.get("path") if isinstance(item, dict) else None
                if rel:
                    candidates.append(root / rel)
        except (OSError, ValueError, AttributeError):
            pass
    for path in candidates:
        try:
            with Image.open(path) as img:
                img.load()
                image = img.convert("RGB")
            image.thumbnail((320, 320), Image.BICUBIC)
            return image
        except (OSError, ValueError):
            if sample:
                raise TrainingError(f"The sample photo {sample} cannot be read as an image.") from None
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:288]
    pixels = np.stack([xx * 255 // 287, yy * 255 // 255, (xx + yy) % 256], axis=2) + rng.integers(0, 32, (256, 288, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))




def export_model(
    run_dir: str | Path,
    out_file: str | Path,
    *,
    sample: str | Path | None = None,
    dataset: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> ExportResult:
    """Write ``out_file`` (a zip) for the finished run in ``run_dir``; TrainingError when it cannot.

    ``dataset``: what the caller knows of the data (name, version, ...); ``calibration``: the
    not-a-dog calibration when it is not the run folder's ``calibration.json``.
    """
    from training.predict import Predictor

    run_dir, out_file = Path(run_dir), Path(out_file)
    predictor = Predictor.from_dir(run_dir)
    meta = predictor.meta
    pre = {k: meta["preprocessing"][k] for k in ("image_size", "resize_size", "crop_pct", "interpolation", "mean", "std")
           if k in meta["preprocessing"]}
    if pre.get("interpolation", "bicubic") != "bicubic":
        raise TrainingError(f"Only bicubic preprocessing can be exported; this run uses {pre['interpolation']}.")
    if calibration is None and (run_dir / CALIBRATION_FILE).is_file():
        try:
            calibration = ckpt.read_json(run_dir / CALIBRATION_FILE)
        except (OSError, ValueError):
            calibration = None
    th = (calibration or {}).get("thresholds") or DEFAULT_THRESHOLDS
    thresholds = {
        "rule": "not a dog when dog_mass < dog_mass; else not sure when the top probability < confidence",
        "dog_mass": float(th["dog_mass"]), "confidence": float(th["confidence"]),
        "source": CALIBRATION_FILE if calibration else "default",
    }
    backbone = get_backbone(meta["backbone"])
    net = ExportNet(predictor.model, _base_split(backbone), _dog_indices(backbone)).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    per_class, split = {}, "test"
    for name, part in ((ckpt.TEST_FILE, "test"), (ckpt.VALIDATION_FILE, "validation")):
        if (run_dir / name).is_file():
            per_class, split = (ckpt.read_json(run_dir / name) or {}).get("per_class") or {}, part
            break
    exported_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    card, card_md = model_card(meta, per_class=per_class, per_class_split=split, dataset=dict(dataset or {}),
                               thresholds=thresholds, exported_at=exported_at)

    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="breedlab-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        outputs = export_onnx(net, onnx_path, image_size=int(pre["image_size"]))
        files["model.onnx"] = onnx_path.read_bytes()
    image = _sample_image(run_dir, meta, sample)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    files["sample.png"] = buf.getvalue()
    recorded = sample_outputs(files["model.onnx"], files["sample.png"], pre, outputs)
    names = list(predictor.class_names)
    top5 = [(names[i], recorded["probabilities"][i]) for i in np.argsort(-np.array(recorded["probabilities"]))[:5]]

    files["model.safetensors"] = (run_dir / ckpt.MODEL_FILE).read_bytes()
    files["meta.json"] = json.dumps(meta, indent=2).encode()
    files["labels.json"] = json.dumps([{"index": i, "name": n, "display_name": display_name(n)} for i, n in enumerate(names)],
                                      indent=2, ensure_ascii=False).encode()
    files["preprocessing.json"] = json.dumps(pre, indent=2).encode()
    files["thresholds.json"] = json.dumps(thresholds, indent=2).encode()
    if calibration:
        files[CALIBRATION_FILE] = json.dumps(calibration, indent=2).encode()
    files["sample_outputs.json"] = json.dumps({**recorded, "top5": [[n, p] for n, p in top5]}, indent=2).encode()
    for name in (ckpt.VALIDATION_FILE, ckpt.TEST_FILE, ckpt.HISTORY_FILE):
        if (run_dir / name).is_file():
            files[name] = (run_dir / name).read_bytes()
    files["model_card.json"] = json.dumps(card, indent=2, ensure_ascii=False).encode()
    files["model_card.md"] = card_md.encode()
    files["README.md"] = readme_text(meta, outputs, card).encode()
    manifest = {
        "format": ARCHIVE_FORMAT, "exported_at": exported_at, "backbone": meta["backbone"], "num_classes": len(names),
        "outputs": outputs, "files": {n: {"size": len(b), "sha256": sha256_hex(b)} for n, b in sorted(files.items())},
    }
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()

    out_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_file) as tmp_path, zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return ExportResult(out_file, out_file.stat().st_size, outputs, top5)

