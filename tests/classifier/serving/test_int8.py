"""classifier.serving.int8: an int8 graph serves only when measured to agree with fp32, once per graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from classifier.serving import int8
from classifier.serving.engine import build_serving


def test_too_few_held_out_photos_mean_fp32_serves_and_the_decision_is_cached(finetuned_run, tmp_path):
    # The session's model holds out 12-16 photos: fewer than MIN_HELD_OUT, so nothing is quantised.
    model = build_serving(finetuned_run, cache_dir=tmp_path, int8=True)
    decision = model.details["int8"]
    assert decision["accepted"] is False and "held-out photos" in decision["reason"]
    assert model.details["precision"] == "fp32"
    onnx = model.details["onnx"]
    cached = json.loads(int8.decision_path(Path(onnx)).read_text())
    assert cached["reason"] == decision["reason"] and cached["format"] == int8.FORMAT
    assert not int8.graph_path(Path(onnx)).exists()


def test_the_setting_off_never_measures(finetuned_run, tmp_path):
    model = build_serving(finetuned_run, cache_dir=tmp_path, int8=False)
    assert "int8" not in model.details and model.details["precision"] == "fp32"
    assert not list(tmp_path.glob("*-int8.*"))


def test_held_out_photos_prefer_a_test_part_and_training_photos_exclude_them(finetuned_run, tmp_path):
    names = json.loads((finetuned_run / "meta.json").read_text())["class_names"]
    held, training, part = int8.held_out_and_training(finetuned_run, names)
    assert part == ("test" if (finetuned_run / "test.json").is_file() else "validation") and held and training
    assert not {str(p.resolve()) for p, _ in held} & {str(p.resolve()) for p in training}
    run = tmp_path / "run"
    run.mkdir()
    for name in ("meta.json", "validation.json"):
        (run / name).write_text((finetuned_run / name).read_text())
    validation = json.loads((run / "validation.json").read_text())
    assert int8.held_out_and_training(run, names)[2] == "validation"
    validation["test"] = validation["predictions"][:3]
    (run / "validation.json").write_text(json.dumps(validation))
    held, training_now, part = int8.held_out_and_training(run, names)
    assert part == "test" and len(held) == 3
    (run / "test.json").write_text(json.dumps({"root": validation["root"], "predictions": validation["predictions"][:5]}))
    held, training_now, part = int8.held_out_and_training(run, names)
    assert part == "test" and len(held) == 5
    # Neither the validation nor the test photos are ever calibration photos.
    assert not {str(p.resolve()) for p in training_now} & {str((Path(validation["root"]) / r["path"]).resolve()) for r in validation["predictions"]}


@pytest.mark.slow
def test_a_quantised_graph_is_measured_against_fp32_and_served_only_when_accepted(finetuned_run, tmp_path, monkeypatch):
    monkeypatch.setattr(int8, "MIN_HELD_OUT", 10)
    monkeypatch.setattr(int8, "CALIBRATION_PHOTOS", 32)
    model = build_serving(finetuned_run, cache_dir=tmp_path, int8=True)
    decision = model.details["int8"]
    for key in ("top1_agreement", "accuracy_fp32", "accuracy_int8", "held_out_photos", "calibration_photos"):
        assert key in decision, decision
    names = json.loads((finetuned_run / "meta.json").read_text())["class_names"]
    held, _, part = int8.held_out_and_training(finetuned_run, names)
    assert decision["calibration_photos"] == 32 and decision["held_out_photos"] == len(held) and decision["held_out"] == part
    accepted = decision["top1_agreement"] >= int8.MIN_AGREEMENT and decision["accuracy_fp32"] - decision["accuracy_int8"] <= int8.MAX_ACCURACY_DROP
    assert decision["accepted"] is accepted
    graph = int8.graph_path(Path(model.details["onnx"]))
    assert graph.exists() is accepted
    assert model.details["precision"] == ("int8" if accepted else "fp32")
    # A second load reuses the decision (no new measurement: the file is not rewritten).
    stamp = int8.decision_path(graph.with_name(graph.name.replace("-int8.onnx", ".onnx"))).stat().st_mtime_ns
    again = build_serving(finetuned_run, cache_dir=tmp_path, int8=True)
    assert again.details["int8"] == decision
    assert int8.decision_path(graph.with_name(graph.name.replace("-int8.onnx", ".onnx"))).stat().st_mtime_ns == stamp


class SamePadNet(nn.Module):
    """Two of timm's Conv2dSame (the padding computed from the input's shape, as in
    tf_efficientnet_lite), a head: the graph shape the serving export produces."""

    def __init__(self) -> None:
        super().__init__()
        from timm.layers import Conv2dSame

        torch.manual_seed(0)
        self.body = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.ReLU6(), Conv2dSame(8, 8, 3, stride=2, groups=8), nn.ReLU6(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.body(x)), dim=1)


def test_the_padding_arithmetic_stays_in_float_in_the_int8_graph(tmp_path):
    import onnx

    path = tmp_path / "net.onnx"
    with torch.no_grad():
        torch.onnx.export(SamePadNet().eval(), (torch.zeros(1, 3, 33, 33),), str(path), input_names=["images"],
                          output_names=["fine"], dynamic_axes={"images": {0: "n"}, "fine": {0: "n"}}, opset_version=17, dynamo=False)
    graph = onnx.load(str(path)).graph
    kept = set(int8.shape_arithmetic(graph))
    ops = {n.op_type for n in graph.node if n.name in kept}
    assert {"Shape", "Ceil"} <= ops and not ops & {"Conv", "Pad", "Gemm"}, ops

    rng = np.random.default_rng(0)
    photos = []
    for i in range(8):
        photo = tmp_path / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (33, 33, 3), dtype=np.uint8)).save(photo)
        photos.append(photo)
    int8.CALIBRATION_BATCH, batch = 4, int8.CALIBRATION_BATCH
    try:
        quantised = int8.quantize(path, photos, lambda images: np.stack([np.asarray(im, np.float32).transpose(2, 0, 1) / 255 for im in images]))
    finally:
        int8.CALIBRATION_BATCH = batch
    q = onnx.load(str(quantised)).graph
    made_by = {o: n for n in q.node for o in n.output}
    # No computed value on the way to a Pad's pads is quantised: they are computed exactly. (A
    # constant such as 0 shared with a quantised ReLU6 may arrive dequantised, and exactly.)
    for node in q.node:
        if node.op_type == "Pad":
            stack, seen = [node.input[1]], set()
            while stack:
                producer = made_by.get(stack.pop())
                if producer is None or producer.name in seen:
                    continue
                seen.add(producer.name)
                assert producer.op_type != "QuantizeLinear", f"{node.name}'s pads pass through {producer.name}"
                if producer.op_type != "Shape":  # a shape does not depend on the values
                    stack.extend(producer.input)
    assert any(n.op_type == "QuantizeLinear" for n in q.node)  # the convolutions themselves are quantised
