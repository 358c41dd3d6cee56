"""An int8 serving graph per model version, accepted only when it answers like the fp32 one.

1. The exported fp32 graph is statically quantised by ONNX Runtime (QDQ, int8 per-channel
   weights, uint8 activations), calibrated with ``CALIBRATION`` on up to ``CALIBRATION_PHOTOS``
   of the run's own training photos (never its held-out ones), one batch per collection so
   memory stays bounded. The heads (Gemm/MatMul, softmax) and the shape arithmetic of timm's
   dynamic "same" padding stay in float (``shape_arithmetic``). That padding was the cause of
   the earlier disagreement (98.1% of validation photos, max probability difference 0.58, and
   no calibration method or float layer changed it): quantised, the pads came back off by one
   pixel. Since then the 20-breed model agrees on 100% of its validation and test photos
   (bench/RESULTS-serving.md has the recipes compared). The export's constant padding is folded
   into the convolutions' own pads first (``fold_pads``), so no Pad runs between two int8 layers.
2. The int8 graph is compared with the fp32 graph on the run's held-out photos (its test split,
   test.json, when the run has one, else its validation photos): it is accepted
   only when its top-1 agrees on at least ``MIN_AGREEMENT`` of them and its accuracy is at
   most ``MAX_ACCURACY_DROP`` below fp32's.
3. The decision (with its numbers, or why it was refused) is written beside the exported
   graph as ``<graph>-int8.json`` and reused by every process; the version's page shows it.
   A refused or failed int8 graph means the fp32 graph serves.

No Django here: ``classifier.serving.engine`` calls ``ensure_int8`` when the setting allows.

Imports training.files and training.imaging besides libraries; nothing of classifier/.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from training.files import atomic_path

log = logging.getLogger(__name__)

FORMAT = 3  # bump when the recipe changes: cached decisions of older recipes are redone
CALIBRATION = "minmax"
CALIBRATION_PHOTOS = 256
CALIBRATION_BATCH = 8
MIN_AGREEMENT = 0.995
MAX_ACCURACY_DROP = 0.003  # accuracy points as a fraction (0.3 points)
MIN_HELD_OUT = 20  # fewer held-out photos than this cannot show agreement: fp32 serves
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}

_lock = threading.Lock()


def decision_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.stem + "-int8.json")


def graph_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.stem + "-int8.onnx")


def read_decision(onnx_path: Path) -> dict[str, Any] | None:
    path = decision_path(onnx_path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None


def held_out_and_training(run_dir: Path, class_names: list[str]) -> tuple[list[tuple[Path, int]], list[Path], str]:
    """The run's held-out photos ``(path, class index)``, training photos, and which part was held out.

    The test split (``test.json``, or a "test" part of validation.json) when the run has one,
    else the validation photos; training photos are the class folders' photos in neither."""
    validation = json.loads((run_dir / "validation.json").read_text())
    meta = json.loads((run_dir / "meta.json").read_text())
    config = meta.get("config", {})
    root = Path(validation.get("root") or config.get("val_dir") or config.get("data_dir") or "")
    index = {name: i for i, name in enumerate(class_names)}
    parts: dict[str, tuple[Path, list]] = {"validation": (root, validation.get("predictions", []))}
    test_file = run_dir / "test.json"
    if test_file.is_file():
        test = json.loads(test_file.read_text())
        if test.get("predictions"):
            parts["test"] = (Path(test.get("root") or root), test["predictions"])
    elif isinstance(validation.get("test"), list) and validation["test"]:
        parts["test"] = (root, validation["test"])
    part = "test" if "test" in parts else "validation"
    rows = {name: [(base / r["path"], index[r["true"]]) for r in items if r.get("true") in index] for name, (base, items) in parts.items()}
    held = rows[part]
    not_training = {str(p.resolve()) for items in rows.values() for p, _ in items}
    data_dir = Path(config.get("data_dir") or root)
    training: list[Path] = []
    for name in class_names:
        folder = data_dir / name
        if folder.is_dir():
            training += [
                p for p in sorted(folder.iterdir())
                if p.suffix.lower() in IMAGE_SUFFIXES and str(p.resolve()) not in not_training
            ]
    return held, training, part


def _spread(items: list, limit: int) -> list:
    if len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def _load(path: Path) -> Image.Image | None:
    from training import imaging

    try:
        with Image.open(path) as img:
            imaging.draft_jpeg(img, 320)
            img.load()
            return imaging.reduce_for(img, 320)
    except (OSError, ValueError, SyntaxError) as exc:
        log.info("int8: skipping unreadable %s: %s", path, exc)
        return None


def shape_arithmetic(graph: Any) -> list[str]:
    """Names of the nodes that compute shapes rather than pixels: everything fed only by ``Shape``
    outputs and constants (timm's dynamic "same" padding: Shape -> Gather -> Cast -> Div -> Ceil
    -> Sub -> Mul -> Max -> Concat -> the pads of a Pad). They carry small integers through float
    arithmetic; quantised, a pad of 1 can come back as 0.996, truncate to 0 and shift every
    feature map below it by a pixel, which no calibration can repair."""
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    derived: set[str] = set()
    names = []
    for node in graph.node:  # ONNX graphs are stored in topological order
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" or (
            any(i in derived for i in inputs) and all(i in derived or i in constants for i in inputs)
        ):
            derived.update(node.output)
            names.append(node.name)
    return names


def fold_pads(graph: Any) -> int:
    """Fold each zero ``Pad`` that feeds one ``Conv`` into the convolution's own (asymmetric) pads.

    The export's fixed "same" padding arrives as Pad -> Conv; left alone, the int8 graph runs each
    Pad as a separate step between two quantised convolutions. Returns how many were folded."""
    from onnx import helper, numpy_helper

    constants = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = []
    for pad in graph.node:
        if pad.op_type != "Pad" or len(pad.input) < 2 or pad.input[1] not in constants or pad.output[0] in outputs:
            continue
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        value = pad.input[2] if len(pad.input) > 2 else ""
        pads = numpy_helper.to_array(constants[pad.input[1]]).tolist()
        users = consumers.get(pad.output[0], [])
        if mode != b"constant" or len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
            continue
        if value and (value not in constants or numpy_helper.to_array(constants[value]).any()):
            continue
        if len(users) != 1 or users[0].op_type != "Conv":
            continue
        conv = users[0]
        attrs = {a.name: a for a in conv.attribute}
        if "auto_pad" in attrs and attrs["auto_pad"].s not in (b"", b"NOTSET"):
            continue
        # Pad lists (N, C, H, W) begins then ends; Conv lists (H, W) begins then ends.
        own = list(attrs["pads"].ints) if "pads" in attrs else [0, 0, 0, 0]
        merged = [own[0] + pads[2], own[1] + pads[3], own[2] + pads[6], own[3] + pads[7]]
        kept = [a for a in conv.attribute if a.name != "pads"]
        del conv.attribute[:]
        conv.attribute.extend([*kept, helper.make_attribute("pads", merged)])
        conv.input[0] = pad.input[0]
        folded.append(pad)
    for pad in folded:
        graph.node.remove(pad)
    return len(folded)


def _float_nodes(model_path: Path) -> list[str]:
    """Names of the nodes kept in float: the heads and the shape arithmetic."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul", "Softmax")] + shape_arithmetic(graph)


def quantize(
    onnx_path: Path, photos: list[Path], preprocess: Callable[[list[Image.Image]], np.ndarray]
) -> Path:
    """Write the int8 graph of ``onnx_path`` calibrated on ``photos``; returns its path."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    images = [im for im in (_load(p) for p in photos) if im is not None]
    if not images:
        raise ValueError("none of the training photos could be read for calibration")
    batches = [preprocess(images[i : i + CALIBRATION_BATCH]) for i in range(0, len(images), CALIBRATION_BATCH)]
    del images

    class Reader(CalibrationDataReader):
        """Hands out one batch per ``set_range`` window: ORT's calibrators keep every intermediate
        tensor of what one ``collect_data`` call reads, so a batch at a time bounds memory."""

        def __init__(self) -> None:
            self.it = iter(())

        def __len__(self) -> int:
            return len(batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.it = iter(batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"images": x}

    target = graph_path(onnx_path)
    pre = target.with_name(target.stem + "-pre.onnx")
    try:
        quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        if fold_pads(model.graph):
            onnx.save(model, str(pre))
        del model
        with atomic_path(target) as tmp:
            quantize_static(
                str(pre), str(tmp), Reader(),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=_float_nodes(pre),
                extra_options={"CalibStridedMinMax": 1},
            )
    finally:
        pre.unlink(missing_ok=True)
    return target


def _probabilities(session: Any, batches: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([session.run(None, {"images": b})[0] for b in batches])


def ensure_int8(
    onnx_path: Path,
    run_dir: Path,
    class_names: list[str],
    preprocess: Callable[[list[Image.Image]], np.ndarray],
    make_session: Callable[[Path], Any],
    fp32_session: Any,
) -> dict[str, Any]:
    """The cached decision for this graph, measuring it first when there is none.

    Returns ``{"accepted": bool, "reason": str, ...numbers}``; never raises for a model that
    cannot be quantised or measured (the decision says why and fp32 serves)."""
    cached = read_decision(onnx_path)
    if cached is not None and (not cached.get("accepted") or graph_path(onnx_path).is_file()):
        return cached
    with _lock:
        cached = read_decision(onnx_path)
        if cached is not None and (not cached.get("accepted") or graph_path(onnx_path).is_file()):
            return cached
        started = time.perf_counter()
        try:
            decision = _measure(onnx_path, run_dir, class_names, preprocess, make_session, fp32_session)
        except Exception as exc:  # noqa: BLE001 - quantisation is an optimisation: fp32 serves regardless
            log.warning("int8 graph for %s not built: %s: %s", run_dir, type(exc).__name__, exc)
            decision = {"accepted": False, "reason": f"int8 quantisation failed: {type(exc).__name__}: {exc}"}
        decision.update({"format": FORMAT, "seconds": round(time.perf_counter() - started, 1), "calibration": CALIBRATION})
        path = decision_path(onnx_path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                Path(tmp).write_text(json.dumps(decision, indent=2))
        except OSError as exc:
            log.warning("cannot store the int8 decision %s: %s", path, exc)
        log.info("int8 graph for %s: %s", run_dir, decision["reason"])
        return decision


def _measure(onnx_path, run_dir, class_names, preprocess, make_session, fp32_session) -> dict[str, Any]:
    held, training, part = held_out_and_training(Path(run_dir), class_names)
    held = [(p, y) for p, y in held if p.is_file()]
    if len(held) < MIN_HELD_OUT:
        return {"accepted": False, "reason": f"only {len(held)} held-out photos can be read (at least {MIN_HELD_OUT} are needed to measure agreement)",
                "held_out_photos": len(held), "needed": MIN_HELD_OUT}
    if not training:
        return {"accepted": False, "reason": "the run's training photos cannot be read for calibration"}
    calibration = _spread(training, CALIBRATION_PHOTOS)
    path = quantize(onnx_path, calibration, preprocess)
    int8 = make_session(path)
    images, labels = [], []
    for p, y in held:
        im = _load(p)
        if im is not None:
            images.append(im)
            labels.append(y)
    batches = [preprocess(images[i : i + 16]) for i in range(0, len(images), 16)]
    del images
    ref = _probabilities(fp32_session, batches)
    got = _probabilities(int8, batches)
    y = np.asarray(labels)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    acc32, acc8 = float((ref.argmax(1) == y).mean()), float((got.argmax(1) == y).mean())
    numbers = {
        "held_out": part, "held_out_photos": int(y.size), "calibration_photos": len(calibration),
        "top1_agreement": round(agreement, 5), "accuracy_fp32": round(acc32, 5), "accuracy_int8": round(acc8, 5),
        "max_probability_diff": round(float(np.abs(ref - got).max()), 5),
    }
    if agreement < MIN_AGREEMENT:
        why = f"top-1 agrees with fp32 on {agreement:.1%} of {y.size} {part} photos (at least {MIN_AGREEMENT:.1%} needed)"
    elif acc32 - acc8 > MAX_ACCURACY_DROP + 1e-9:
        why = f"accuracy drops {100 * (acc32 - acc8):.2f} points (at most {100 * MAX_ACCURACY_DROP:.1f} allowed)"
    else:
        return {"accepted": True, "reason": f"int8 accepted: top-1 agrees on {agreement:.1%} of {y.size} {part} photos, accuracy {acc32:.1%} -> {acc8:.1%}", **numbers}
    try:
        os.unlink(path)  # a refused graph is never served
    except OSError:
        pass
    return {"accepted": False, "reason": f"fp32 serves: {why}", **numbers}
