"""training.imaging: the fast evaluation view equals training's, and big images stay small in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training import imaging
from training.data import EvalTransform, decode_image

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
REPO = Path(__file__).resolve().parents[2]


def reference(img: Image.Image, resize_size: int, crop: int) -> torch.Tensor:
    return EvalTransform(size=crop, mean=MEAN, std=STD)(decode_image(img, resize_size, "bicubic", orient=False))


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)


@pytest.mark.parametrize(("size", "resize_size", "crop"), [((224, 224), 256, 224), ((500, 333), 256, 224), ((333, 500), 232, 224), ((640, 480), 224, 224), ((300, 200), 200, 224)])
def test_prepare_equals_training_evaluation_view(size, resize_size, crop):
    img = photo(*size)
    fast = imaging.prepare([img], resize_size=resize_size, crop=crop, mean=MEAN, std=STD)
    assert fast.dtype == torch.float32 and fast.shape == (1, 3, crop, crop)
    # One resample into the crop box vs resize-then-crop: the same filter, rounding apart.
    assert float((fast[0] - reference(img, resize_size, crop)).abs().max()) < 0.05


def test_prepare_equals_training_on_shared_photos(stanford_dogs_dir):
    photos = sorted(stanford_dogs_dir.glob("*/*.jpg"))[::400][:12]
    assert photos
    for path in photos:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        fast = imaging.prepare([rgb], resize_size=256, crop=224, mean=MEAN, std=STD)[0]
        assert float((fast - reference(rgb, 256, 224)).abs().max()) < 0.05, path


def test_orientation_is_read_from_the_original_and_applied_to_the_reduced_image():
    img = photo(1600, 1200)
    exif = Image.Exif()
    exif[imaging.ORIENTATION_TAG] = 6
    img.info["exif"] = exif.tobytes()
    img.getexif()[imaging.ORIENTATION_TAG] = 6
    out = imaging.reduce_for(img, 300)
    assert out.mode == "RGB" and out.size == (300, 400)  # 1200 // 300 = 4: 400x300, then rotated


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_deep_images_are_rescaled_in_float32(mode):
    arr = np.linspace(100, 4000, 40 * 30).reshape(30, 40)
    img = Image.fromarray(arr.astype(np.uint16)) if mode == "I;16" else Image.fromarray(arr.astype(np.float32)).convert(mode)
    out = np.asarray(imaging.to_rgb(img))[..., 0]
    assert out.min() == 0 and out.max() == 255


def test_non_finite_float_pixels_become_the_lowest_value():
    arr = np.array([[np.nan, 1.0], [np.inf, 3.0]], dtype=np.float32)
    out = np.asarray(imaging.to_rgb(Image.fromarray(arr)))[..., 0]
    assert out.tolist() == [[0, 0], [0, 255]]


_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from PIL import Image
    Image.MAX_IMAGE_PIXELS = 50_000_000
    from training import imaging
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with Image.open(sys.argv[1]) as img:
        img.load()
        small = imaging.reduce_for(img, 320)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": (after - before) / 1024, "size": small.size, "mode": small.mode}))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "bytes_per_pixel"),
    [("I;16", 2), ("RGBA", 4), ("P", 1), ("F", 4)],
)
def test_a_6300px_image_is_reduced_before_conversion_within_bounded_memory(tmp_path, mode, bytes_per_pixel):
    """The peak RSS of decoding + reducing stays near the decoded image itself: no float64 or
    full-size RGB/RGBA copies (those would add 2-8x the decoded size)."""
    side = 6300
    if mode == "I;16":
        img = Image.fromarray(np.zeros((side, side), dtype=np.uint16))
    elif mode == "F":
        img = Image.fromarray(np.zeros((side, side), dtype=np.float32))
    else:
        img = Image.new(mode, (side, side))
    path = tmp_path / ("big.tif" if mode == "F" else "big.png")
    img.save(path)
    del img
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, env=env, timeout=300, check=True)
    result = json.loads(out.stdout)
    decoded_mb = side * side * bytes_per_pixel / 2**20
    assert result["mode"] == "RGB" and tuple(result["size"]) == (332, 332)  # 6300 // 320 = 19, ceil(6300 / 19) = 332
    assert result["peak_mb"] < decoded_mb + 40, result
