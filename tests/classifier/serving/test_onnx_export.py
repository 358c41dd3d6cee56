"""classifier.serving.onnx_export: timm's "same" padding becomes constant padding for the graph's image size."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from classifier.serving.onnx_export import fixed_padding
from tests.classifier.serving.test_int8 import SamePadNet


class Pair(nn.Module):
    """DualNet's attributes, so export_onnx names its outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fine, self.base = SamePadNet(), None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.fine(x),)


@pytest.mark.parametrize("size", [32, 33])
def test_fixed_padding_answers_like_the_dynamic_padding_and_leaves_the_original_alone(size):
    net = SamePadNet().eval()
    fixed = fixed_padding(net, size)
    assert fixed is not net and not any(type(m).__name__ == "_FixedPadConv" for m in net.modules())
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fixed(x), net(x))


def test_the_exported_graph_computes_no_shapes_and_matches_eager(tmp_path):
    import onnxruntime as ort

    from classifier.serving.onnx_export import export_onnx

    net = Pair().eval()
    path = tmp_path / "net.onnx"
    export_onnx(net, path, image_size=33)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Conv" in ops and not ops & {"Shape", "Ceil", "Gather"}, ops
    x = torch.randn(4, 3, 33, 33, generator=torch.Generator().manual_seed(1))  # the batch stays dynamic
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        assert abs(got - net(x)[0].numpy()).max() < 1e-5


def test_a_net_without_same_convolutions_is_exported_as_it_is():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    assert fixed_padding(net, 32) is net


def test_the_constant_padding_folds_into_the_convolutions_with_the_same_answers(tmp_path):
    import numpy as np
    import onnxruntime as ort
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from classifier.serving import int8
    from classifier.serving.onnx_export import export_onnx

    path, pre = tmp_path / "net.onnx", tmp_path / "pre.onnx"
    export_onnx(Pair().eval(), path, image_size=32)  # 32: the padding is asymmetric (0 before, 1 after)
    quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)  # what int8.quantize starts from
    model = onnx.load(str(pre))
    assert sum(n.op_type == "Pad" for n in model.graph.node) == 2
    assert int8.fold_pads(model.graph) == 2
    assert not any(n.op_type == "Pad" for n in model.graph.node)
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert np.abs(before - after).max() < 1e-6
