"""The serving forward pass: a fine-tuned model and its pretrained original head in one graph.

Every answer needs two networks: the fine-tuned model (breeds) and the pretrained model with
its original head (the "before" answer and the dog-class mass of the not-a-dog rule). Stages
that fine-tuning left untouched are identical in both, so they run once:

    x -> shared stages -> fine-tuned suffix -> new head       -> softmax (breeds)
                       \\-> pretrained suffix -> original head -> softmax (ImageNet/CIFAR classes)

With the default recipe (last 2 stages unfrozen) the second branch costs a few percent of a
forward pass. The graph is exported once per content (a hash of its weights) to ONNX and run
with ONNX Runtime; the export is checked against eager PyTorch on fixed inputs and refused
(eager PyTorch serves instead) when any probability differs by more than ``TOLERANCE``.

No Django here: ``classifier.serving.cache`` owns the per-process cache and the settings.

Imports classifier.serving.int8, classifier.serving.onnx_export, training.backbones, training.data,
training.imaging, training.predict (besides Django and libraries); never another domain's views or api.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from classifier.serving.onnx_export import export_onnx
from training.backbones import get_backbone, imagenet_dog_indices
from training.data import EvalTransform, decode_image
from training.imaging import prepare
from training.predict import Predictor

log = logging.getLogger(__name__)

EXPORT_FORMAT = 3  # bump when the exported graph changes
TOLERANCE = 1e-4  # largest allowed |p_onnx - p_torch| for any class probability
CIFAR10_DOG = 5


class DualNet(nn.Module):
    """Shared prefix, then the fine-tuned branch and/or the pretrained branch; returns probabilities."""

    def __init__(
        self,
        prefix: Sequence[nn.Module],
        fine: Sequence[nn.Module] | None,
        base: Sequence[nn.Module] | None,
    ) -> None:
        super().__init__()
        if fine is None and base is None:
            raise ValueError("DualNet needs at least one branch.")
        self.prefix = nn.Sequential(*prefix)
        self.fine = nn.Sequential(*fine) if fine is not None else None
        self.base = nn.Sequential(*base) if base is not None else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mid = self.prefix(x)
        out = []
        if self.fine is not None:
            out.append(torch.softmax(self.fine(mid).float(), dim=1))
        if self.base is not None:
            out.append(torch.softmax(self.base(mid).float(), dim=1))
        return tuple(out)


def shared_prefix_length(a: Sequence[nn.Module], b: Sequence[nn.Module]) -> int:
    """How many leading stages hold exactly the same tensors (weights and BatchNorm statistics)."""
    n = 0
    for sa, sb in zip(a, b):
        da, db = sa.state_dict(), sb.state_dict()
        if list(da) != list(db) or any(da[k].shape != db[k].shape or not torch.equal(da[k], db[k]) for k in da):
            break
        n += 1
    return n


def state_hash(module: nn.Module, *extra: Any) -> str:
    """A content key: every tensor's name, shape, dtype and bytes, plus ``extra``."""
    h = hashlib.sha256(repr(extra).encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:32]


@dataclass
class Preprocessing:
    image_size: int
    resize_size: int
    interpolation: str
    mean: list[float]
    std: list[float]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(int(d["image_size"]), int(d["resize_size"]), str(d.get("interpolation", "bicubic")), list(d["mean"]), list(d["std"]))

    def transform(self) -> EvalTransform:
        return EvalTransform(size=self.image_size, mean=self.mean, std=self.std)


@dataclass
class Outputs:
    fine: np.ndarray | None  # (n, num_classes) or None without a fine-tuned model
    base: np.ndarray | None  # (n, num_original_classes) or None without pretrained weights


@dataclass
class ServingModel:
    """What one process serves: preprocessing, the forward pass, class names, Grad-CAM."""

    net: DualNet
    preprocessing: Preprocessing
    class_names: list[str] | None
    base_class_names: list[str] | None
    dog_indices: list[int]
    backbone: str
    engine: str  # "onnxruntime" | "torch"
    threads: int
    fine_model: nn.Module | None = None  # eager TransferModel, for Grad-CAM
    session: Any = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._transform = self.preprocessing.transform()

    # ---- forward -------------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The training pipeline's evaluation view: shorter side to resize_size, centre crop, normalise.

        ``images`` come from ``classifier.serving.imaging``: RGB with the EXIF orientation already
        applied. One antialiased resample straight into the crop (uint8), then float32 once
        (training.imaging.prepare); ``reference_preprocess`` is training's own path."""
        p = self.preprocessing
        return prepare(images, resize_size=p.resize_size, crop=p.image_size, mean=p.mean, std=p.std, interpolation=p.interpolation)

    def reference_preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Training's evaluation path (decode_image + EvalTransform), the reference ``preprocess`` is checked against."""
        p = self.preprocessing
        return torch.stack([self._transform(decode_image(img, p.resize_size, p.interpolation, orient=False)) for img in images])

    def forward(self, batch: torch.Tensor) -> Outputs:
        if self.session is not None:
            arrays = self.session.run(None, {"images": batch.numpy()})
        else:
            with torch.inference_mode():
                arrays = [t.numpy() for t in self.net(batch.contiguous(memory_format=torch.channels_last))]
        it = iter(arrays)
        fine = next(it) if self.net.fine is not None else None
        base = next(it) if self.net.base is not None else None
        return Outputs(fine, base)

    def eager_forward(self, batch: torch.Tensor) -> Outputs:
        """The same answer from eager PyTorch (the reference the fast path is checked against)."""
        with torch.inference_mode():
            arrays = [t.numpy() for t in self.net(batch)]
        it = iter(arrays)
        return Outputs(next(it) if self.net.fine is not None else None, next(it) if self.net.base is not None else None)

    def classify(self, images: Sequence[Image.Image]) -> Outputs:
        return self.forward(self.preprocess(images))

    def dog_mass(self, base: np.ndarray) -> np.ndarray:
        """Probability the pretrained head puts on its dog classes, per image."""
        if not self.dog_indices:
            return np.zeros(base.shape[0], dtype=np.float64)
        return base[:, self.dog_indices].sum(axis=1).astype(np.float64)

    # ---- Grad-CAM ------------------------------------------------------------------------
    def gradcam(self, image: Image.Image, class_index: int | None = None) -> tuple[np.ndarray, int]:
        """Grad-CAM over the last convolutional feature map of the fine-tuned model.

        Returns a (h, w) map in [0, 1] at the feature map's resolution and the class explained.
        The last stage is run child by child (no hooks on the shared model), so concurrent
        requests on other threads are not disturbed.
        """
        model = self.fine_model
        if model is None:
            raise ValueError("Grad-CAM needs a fine-tuned model.")
        last = model.stages[-1]
        if not isinstance(last, nn.Sequential):
            raise ValueError("Grad-CAM is not supported for this backbone.")
        x = self.preprocess([image]).requires_grad_(True)
        with torch.enable_grad():
            h = model.forward_stages(x, 0, model.num_stages - 1)
            feature_map = h if h.ndim == 4 else None
            for child in last:
                h = child(h)
                if h.ndim == 4:
                    feature_map = h
            if feature_map is None:
                raise ValueError("Grad-CAM found no convolutional feature map.")
            logits = model.forward_head(h)
            target = int(logits.argmax(dim=1)) if class_index is None else int(class_index)
            (grad,) = torch.autograd.grad(logits[0, target], feature_map)
        weights = grad.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * feature_map).sum(dim=1))[0].detach()
        top = float(cam.max())
        cam = cam / top if top > 0 else cam
        return cam.numpy(), target


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------
def _dog_indices(original_task: str) -> list[int]:
    if original_task == "imagenet":
        return sorted(imagenet_dog_indices())
    if original_task == "cifar10":
        return [CIFAR10_DOG]
    return []


def build_serving(
    run_dir: Path | None,
    *,
    backbone: str | None = None,
    cache_dir: Path | None,
    engine: str = "onnxruntime",
    threads: int = 1,
    int8: bool = False,
) -> ServingModel:
    """Load a run directory (or only the pretrained ``backbone`` when ``run_dir`` is None).

    With ``int8`` (and ONNX Runtime) a fine-tuned model serves its int8 graph when
    ``classifier.serving.int8`` accepted it for this version (measured once, then cached);
    ``details["int8"]`` holds the decision and its numbers either way.

    Raises training's errors (TrainingError, WeightsUnavailable, ConfigError) when the fine-tuned
    model cannot be loaded. Missing pretrained weights only drop the "before" branch (logged).
    """
    torch.set_num_threads(threads)
    started = time.perf_counter()
    predictor = Predictor.from_dir(run_dir) if run_dir is not None else None
    name = predictor.meta["backbone"] if predictor is not None else backbone
    if not name:
        raise ValueError("build_serving needs a run directory or a backbone name.")
    bb = get_backbone(name)
    base_split = None
    try:
        base_split = bb.split(bb.build(pretrained=True))
    except Exception as exc:  # noqa: BLE001 - WeightsUnavailable or a broken weights file
        if predictor is None:
            raise
        log.warning("pretrained %s weights unavailable (%s): serving without the 'before' answer", name, exc)

    if predictor is not None:
        fine_model = predictor.model.eval().to(memory_format=torch.contiguous_format)
        fine_stages = list(fine_model.stages)
        head = nn.Sequential(fine_model.dropout, fine_model.head)
        preprocessing = Preprocessing.from_dict(predictor.meta["preprocessing"])
        if base_split is not None:
            k = shared_prefix_length(fine_stages, base_split.stages)
            net = DualNet(fine_stages[:k], [*fine_stages[k:], head], [*base_split.stages[k:], base_split.classifier])
        else:
            k = len(fine_stages)
            net = DualNet(fine_stages, [head], None)
    else:
        fine_model = None
        preprocessing = Preprocessing.from_dict(bb.preprocessing())
        k = len(base_split.stages)
        net = DualNet(base_split.stages, None, [base_split.classifier])
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)

    model = ServingModel(
        net=net,
        preprocessing=preprocessing,
        class_names=list(predictor.class_names) if predictor is not None else None,
        base_class_names=list(bb.original_classes) if base_split is not None else None,
        dog_indices=_dog_indices(bb.original_task) if base_split is not None else [],
        backbone=name,
        engine="torch",
        threads=threads,
        fine_model=fine_model,
        details={"shared_stages": k, "stages": len(fine_stages) if predictor is not None else k},
    )
    if engine == "onnxruntime":
        try:
            _attach_onnx(model, cache_dir=cache_dir, threads=threads)
            if int8 and run_dir is not None and model.session is not None:
                _attach_int8(model, Path(run_dir), threads=threads)
        except Exception as exc:  # noqa: BLE001 - any export/runtime problem: eager PyTorch still answers
            log.warning("ONNX Runtime unavailable for %s, serving with eager PyTorch: %s", run_dir or name, exc)
            model.details["onnx_error"] = str(exc)
    if model.session is None:
        net.to(memory_format=torch.channels_last)
    model.details["load_s"] = round(time.perf_counter() - started, 3)
    return model


def _check_inputs(p: Preprocessing) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(2, 3, p.image_size, p.image_size, generator=g)


_export_lock = threading.Lock()


def _attach_onnx(model: ServingModel, *, cache_dir: Path | None, threads: int) -> None:
    p = model.preprocessing
    key = state_hash(model.net, EXPORT_FORMAT, p.image_size, torch.__version__)
    folder = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "breedlab-serving"
    path = folder / f"{model.backbone}-{key}.onnx"
    if not path.is_file():
        with _export_lock:
            if not path.is_file():
                export_onnx(model.net, path, image_size=p.image_size)
    session = onnx_session(path, threads)
    x = _check_inputs(p)
    reference = model.eager_forward(x)
    got = session.run(None, {"images": x.numpy()})
    expected = [a for a in (reference.fine, reference.base) if a is not None]
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, expected))
    if not diff <= TOLERANCE:
        raise ValueError(f"the exported graph differs from eager PyTorch by {diff:.2e} (> {TOLERANCE:.0e})")
    model.session = session
    model.engine = "onnxruntime"
    model.details.update({"onnx": str(path), "onnx_max_diff": diff, "precision": "fp32"})


def onnx_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _attach_int8(model: ServingModel, run_dir: Path, *, threads: int) -> None:
    """Serve the version's int8 graph when it was accepted (classifier.serving.int8 measures once)."""
    from classifier.serving import int8

    path = Path(model.details["onnx"])
    decision = int8.ensure_int8(
        path, run_dir, list(model.class_names or []),
        preprocess=lambda images: model.preprocess(images).numpy(),
        make_session=lambda p: onnx_session(p, threads),
        fp32_session=model.session,
    )
    model.details["int8"] = decision
    if decision.get("accepted"):
        try:
            model.session = onnx_session(int8.graph_path(path), threads)
            model.details["precision"] = "int8"
        except Exception as exc:  # noqa: BLE001 - a damaged cached graph: fp32 keeps serving
            log.warning("int8 graph %s cannot be loaded, serving fp32: %s", int8.graph_path(path), exc)
            model.details["int8"] = {**decision, "accepted": False, "reason": f"fp32 serves: the int8 graph cannot be loaded ({exc})"}
