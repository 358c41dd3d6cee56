"""Fast, bounded-memory image preparation shared by training's decoding and serving.

The order is what keeps both time and memory small:

1. ``open_reduced``: a JPEG is decoded by libjpeg straight at a reduced scale (DCT scaling,
   1/2, 1/4 or 1/8) when it is at least twice the size the caller needs;
2. ``shrink``: any other large image is reduced by an integer factor (``Image.reduce``, a box
   filter in C) *before* its mode is converted, so 16-bit, float, RGBA and palette images never
   get a full-size RGB/float copy;
3. ``to_rgb``: the (now small) image becomes RGB (transparency over white, 16-bit/float data
   rescaled in float32 in place, never float64);
4. ``orient``: the EXIF orientation (read from the original) is applied to the small image;
5. ``resized_crop``: one antialiased resize in uint8 straight into the centre crop (the crop
   box is resampled, no full resized copy), and ``normalize_into`` scales to float32 once.

``prepare`` chains 5 for the evaluation view: the same numbers as training's
``decode_image`` + ``EvalTransform`` to within resampling rounding (bench/serving_latency.py
checks top-1 equality and reports the largest probability difference).

Imports nothing of classifier/ (PIL, numpy and torch only).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBX", "I", "F", "CMYK", "PA", "La", "RGBa", "YCbCr"}
_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8; 1 when absent or unreadable)."""
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - malformed EXIF is common in the wild; the pixels are still good
        return 1


def orient(img: Image.Image, value: int) -> Image.Image:
    """Apply an EXIF orientation value (1 = as stored)."""
    method = _TRANSPOSE.get(value)
    return img if method is None else img.transpose(method)


def draft_jpeg(img: Image.Image, min_side: int) -> None:
    """Ask libjpeg (before ``load``) for the smallest 1/2^k scale whose shorter side is >= ``min_side``."""
    if img.format not in ("JPEG", "MPO"):
        return
    w, h = img.size
    if min(w, h) < 2 * min_side:
        return
    scale = min_side / min(w, h)
    img.draft("RGB", (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))


def shrink(img: Image.Image, min_side: int, max_side: int | None = None) -> Image.Image:
    """Reduce by the largest integer factor that keeps the shorter side >= ``min_side`` (or, for
    a very elongated image, by enough to bring the longer side to at most ``max_side``), in the
    image's own mode (box filter; no mode conversion, no float copy). Returns ``img`` when the
    factor is 1."""
    factor = min(img.size) // max(1, min_side)
    if max_side:
        factor = max(factor, math.ceil(max(img.size) / max_side))
    if factor < 2:
        return img
    if img.mode in _REDUCIBLE:
        return img.reduce(factor)
    # 16-bit greyscale, palette and bilevel images: Pillow's resize works in those modes
    # (palette/bilevel by nearest neighbour, which keeps their palette valid).
    w, h = img.size
    return img.resize((max(1, math.ceil(w / factor)), max(1, math.ceil(h / factor))), Image.Resampling.BOX)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Transparent pixels become white; 16-bit and float data are
    rescaled to 0..255 in float32 (in place). Call it on the already-reduced image."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img).astype(np.float32)  # the one float32 copy (I;16 has no float view)
        finite = np.isfinite(arr)
        if finite.all():
            lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        else:
            values = arr[finite]
            lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
            np.copyto(arr, np.float32(lo), where=~finite)
        if hi <= lo:
            arr.fill(0.0)
        else:
            arr -= lo
            arr *= 255.0 / (hi - lo)
            np.clip(arr, 0.0, 255.0, out=arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def reduce_for(img: Image.Image, min_side: int, max_side: int | None = None) -> Image.Image:
    """A loaded image -> RGB, EXIF-oriented, shorter side >= ``min_side`` (when it was larger;
    longer side <= ``max_side`` when given), shrunk before its mode is converted. The caller
    drops ``img`` afterwards."""
    value = orientation(img)
    small = to_rgb(shrink(img, min_side, max_side))
    return orient(small, value)


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """torchvision's ``resize(img, size)``: the shorter side becomes ``size`` (truncating the longer)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def resize_shorter(img: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Shorter side -> ``size`` with one antialiased resize (uint8, like torchvision on PIL images)."""
    w, h = resized_size(img.width, img.height, size)
    if (w, h) == img.size:
        return img
    return img.resize((w, h), _RESAMPLE[interpolation])


def crop_box(width: int, height: int, resize_size: int, crop: int) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """The centre ``crop`` of the image resized to ``resize_size``, as (output size, source box).

    The box is in the source's coordinates, so one resample gives the crop directly
    (torchvision's ``center_crop`` offsets: round((h - crop) / 2))."""
    rw, rh = resized_size(width, height, resize_size)
    cw, ch = min(crop, rw), min(crop, rh)
    left, top = int(round((rw - cw) / 2.0)), int(round((rh - ch) / 2.0))
    sx, sy = width / rw, height / rh
    return (cw, ch), (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)


def resized_crop(img: Image.Image, resize_size: int, crop: int, interpolation: str = "bicubic") -> Image.Image:
    """Resize (shorter side ``resize_size``) and centre-crop ``crop`` x ``crop`` in one resample.

    When the resized image would be smaller than the crop (a crop larger than resize_size),
    training's EvalTransform first resizes to ``crop``; so does this."""
    if min(resized_size(img.width, img.height, resize_size)) < crop:
        resize_size = crop
    size, box = crop_box(img.width, img.height, resize_size, crop)
    return img.resize(size, _RESAMPLE[interpolation], box=box)


def normalize_into(out: torch.Tensor, img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Write ``(pixels / 255 - mean) / std`` of an RGB image into ``out`` (3, h, w) float32, in place."""
    out.numpy()[...] = np.asarray(img).transpose(2, 0, 1)  # uint8 (h, w, 3) -> float32 (3, h, w), one pass
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], dtype=torch.float32).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32).view(3, 1, 1)
    return out.mul_(scale).sub_(shift)


def prepare(
    images: Sequence[Image.Image],
    *,
    resize_size: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bicubic",
) -> torch.Tensor:
    """RGB images (already oriented) -> the evaluation batch (n, 3, crop, crop) float32."""
    batch = torch.empty((len(images), 3, crop, crop), dtype=torch.float32)
    for i, img in enumerate(images):
        normalize_into(batch[i], resized_crop(img, resize_size, crop, interpolation), mean, std)
    return batch
