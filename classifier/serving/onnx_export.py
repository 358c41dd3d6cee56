"""The serving graph as an ONNX file: a fixed image size, the batch dimension dynamic.

timm's TensorFlow-style "same" convolutions (tf_efficientnet_lite's stride-2 layers) compute
their padding from the input's shape at every call; exported as they are, that is about 200
small ONNX nodes of shape arithmetic and a Pad per layer that ONNX Runtime cannot fold, and which
the int8 quantiser used to quantise (the pads came back off by one pixel). The serving graph has
one image size, so ``fixed_padding`` turns them into constant padding before the export.

Imports training.files (besides torch and timm); nothing else of the project.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from training.files import atomic_path


class _FixedPadConv(nn.Module):
    """A TensorFlow-style "same" convolution for one known input size: constant padding, then the
    convolution (ONNX: Pad + Conv, which ONNX Runtime fuses into one Conv)."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv, self.pads = conv, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        return F.conv2d(F.pad(x, self.pads), c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def fixed_padding(net: nn.Module, image_size: int) -> nn.Module:
    """A copy of ``net`` whose timm ``Conv2dSame`` layers (tf_efficientnet_lite's stride-2
    convolutions) pad by constants computed for ``image_size`` inputs; ``net`` itself when it has
    none. Exported as is, they compute their padding from the input's shape at every call (about
    200 small ONNX nodes) and a Pad that neither ONNX Runtime nor the int8 quantiser can fold into
    the convolution."""
    try:
        from timm.layers import Conv2dSame
        from timm.layers.padding import get_same_padding
    except ImportError:
        return net
    if not any(isinstance(m, Conv2dSame) for m in net.modules()):
        return net
    fixed = copy.deepcopy(net)
    same = [(name, m) for name, m in fixed.named_modules() if isinstance(m, Conv2dSame)]
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, args, name=name: sizes.__setitem__(name, tuple(args[0].shape[-2:])))
             for name, m in same]
    try:
        with torch.no_grad():
            fixed(torch.zeros(1, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    for name, conv in same:
        if name not in sizes:
            continue
        (ih, iw), (kh, kw) = sizes[name], conv.weight.shape[-2:]
        ph = get_same_padding(ih, kh, conv.stride[0], conv.dilation[0])
        pw = get_same_padding(iw, kw, conv.stride[1], conv.dilation[1])
        parent, _, child = name.rpartition(".")
        setattr(fixed.get_submodule(parent) if parent else fixed, child,
                _FixedPadConv(conv, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)))
    return fixed


def export_onnx(net: nn.Module, path: Path, *, image_size: int) -> None:
    """Export ``net`` (batch dimension dynamic, the image size fixed) atomically to ``path``."""
    names = ["fine", "base"] if net.fine is not None and net.base is not None else (["fine"] if net.fine is not None else ["base"])
    net = fixed_padding(net, image_size).to(memory_format=torch.contiguous_format)
    dummy = torch.zeros(1, 3, image_size, image_size)
    with atomic_path(path) as tmp, torch.no_grad(), _quiet_export():
        torch.onnx.export(
            net,
            (dummy,),
            str(tmp),
            input_names=["images"],
            output_names=names,
            dynamic_axes={"images": {0: "n"}, **{n: {0: "n"} for n in names}},
            opset_version=17,
            dynamo=False,
        )


class _quiet_export:
    """torch.onnx's TracerWarnings (timm's shape checks under a fixed input size) are expected."""

    def __enter__(self) -> None:
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)
