"""Serving a finished run: rebuild the model from its directory alone and classify PIL images.

No pretrained weight file is needed: the architecture is built without weights and
``model.safetensors`` is loaded into it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from training.backbones import get_backbone
from training.checkpoint import load_run
from training.data import EvalTransform, decode_image
from training.errors import TrainingError
from training.model import TransferModel


class Predictor:
    def __init__(self, model: TransferModel, meta: dict[str, Any], *, device: str | torch.device = "cpu") -> None:
        self.model = model.eval()
        self.meta = meta
        self.class_names: list[str] = list(meta["class_names"])
        self.device = torch.device(device)
        pre = meta["preprocessing"]
        self._resize = int(pre["resize_size"])
        self._interpolation = pre.get("interpolation", "bicubic")
        self._transform = EvalTransform(size=int(pre["image_size"]), mean=pre["mean"], std=pre["std"])
        self.model.to(self.device, memory_format=torch.channels_last)

    @classmethod
    def from_dir(cls, path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> Predictor:
        """Rebuild from ``model.safetensors`` + ``meta.json`` (strict load; errors are TrainingError)."""
        state, meta = load_run(Path(path))
        backbone = get_backbone(meta["backbone"])
        model, _ = backbone.transfer_model(
            int(meta["num_classes"]), pretrained=False, dropout=float(meta.get("architecture", {}).get("dropout", 0.0))
        )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise TrainingError(f"{path}/model.safetensors does not fit backbone {backbone.name}: {exc}") from None
        return cls(model, meta, device=device)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self._transform(decode_image(img, self._resize, self._interpolation)) for img in images])

    @torch.inference_mode()
    def probabilities(self, images: Sequence[Image.Image], *, batch_size: int = 32) -> torch.Tensor:
        """Softmax probabilities, shape (len(images), num_classes), float32 on CPU."""
        if not images:
            return torch.zeros(0, len(self.class_names))
        out = []
        for start in range(0, len(images), batch_size):
            x = self.preprocess(images[start : start + batch_size]).to(self.device, memory_format=torch.channels_last)
            out.append(torch.softmax(self.model(x).float(), dim=1).cpu())
        return torch.cat(out)

    def predict(self, images: Sequence[Image.Image], top_k: int = 5) -> list[list[tuple[str, float]]]:
        """For each image the ``top_k`` (class name, probability) pairs, most likely first."""
        probs = self.probabilities(images)
        k = min(top_k, len(self.class_names))
        values, indices = probs.topk(k, dim=1)
        return [[(self.class_names[int(i)], float(v)) for v, i in zip(vs, ix)] for vs, ix in zip(values, indices)]


def evaluate_folder(predictor: Predictor, data_dir: str | os.PathLike[str], *, batch_size: int = 64, num_workers: int = -1) -> dict[str, Any]:
    """Score a labelled folder (``<class>/<image>``): top1, top5, n, per_class precision/recall.

    Class folders must be classes of the model (some may be absent); unreadable files are
    skipped with a warning.
    """
    from training.data import decode_images, scan_image_folder, warn_skipped
    from training.engine import classification_report
    from training.errors import DataError

    classes, samples, skipped = scan_image_folder(data_dir)
    if not samples:
        raise DataError(f"{data_dir} holds no images in class folders.")
    unknown = [c for c in classes if c not in predictor.class_names]
    if unknown:
        raise DataError(f"The model does not know these classes: {', '.join(unknown)}.")
    images, failures = decode_images(
        [s.path for s in samples], resize_size=predictor._resize, interpolation=predictor._interpolation, num_workers=num_workers
    )
    skipped = list(skipped) + [(samples[i].relpath, why) for i, why in sorted(failures.items())]
    warn_skipped(skipped)
    keep = [i for i in range(len(samples)) if i not in failures]
    targets = torch.tensor([predictor.class_names.index(classes[samples[i].label]) for i in keep])
    probs = []
    with torch.inference_mode():
        for start in range(0, len(keep), batch_size):
            x = torch.stack([predictor._transform(images[i]) for i in keep[start : start + batch_size]])
            probs.append(torch.softmax(predictor.model(x.to(predictor.device)).float(), dim=1).cpu())
    report = classification_report(torch.cat(probs), targets, predictor.class_names)
    present = set(targets.tolist())
    per_class = {name: v for i, (name, v) in enumerate(report["per_class"].items()) if i in present}
    return {"top1": report["top1"], "top5": report["top5"], "n": report["n"], "per_class": per_class}
