"""classifier.serving.imaging: what an upload must be to reach the model, and what gets stored."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image

from classifier.serving import imaging
from classifier.serving.imaging import ImageRejected, open_upload


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def upload(data: bytes, name: str = "photo.jpg") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")


def gradient(w: int = 64, h: int = 48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2), mode="RGB")


def rotated_jpeg(img: Image.Image) -> bytes:
    """``img`` as a JPEG whose EXIF says: rotate 90° clockwise to display."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif.tobytes(), quality=95)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_it_accepts_every_supported_format_as_rgb(fmt):
    decoded = open_upload(upload(encode(gradient(), fmt), f"x.{fmt.lower()}"))
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == (64, 48)
    assert decoded.sha256 and decoded.original_name == f"x.{fmt.lower()}"


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "I;16", "I", "F", "LA", "RGBA", "YCbCr"])
def test_it_converts_every_mode_to_rgb(mode):
    img = gradient().convert("L").convert(mode) if mode in ("I;16", "I", "F") else gradient().convert(mode)
    fmt = "TIFF" if mode in ("CMYK", "I;16", "I", "F", "YCbCr") else "PNG"
    decoded = open_upload(upload(encode(img, fmt)))
    assert decoded.image.mode == "RGB" and decoded.image.size == (64, 48)


def test_it_puts_transparent_pixels_on_white():
    img = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    decoded = open_upload(upload(encode(img, "PNG"), "clear.png"))
    assert decoded.image.getpixel((5, 5)) == (255, 255, 255)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_keeping_enough_pixels_and_its_orientation():
    img = gradient(2400, 1600)
    decoded = open_upload(upload(rotated_jpeg(img)))
    # 1/4 scale (400 px) is the smallest that keeps the shorter side at least DECODE_MIN_SIDE (1/8: 200).
    assert decoded.image.size == (400, 600)
    assert imaging.DECODE_MIN_SIDE <= min(decoded.image.size) < 2 * imaging.DECODE_MIN_SIDE
    by_hand = img.transpose(Image.Transpose.ROTATE_270).resize((400, 600), Image.Resampling.BOX)
    assert np.abs(np.asarray(decoded.image, dtype=int) - np.asarray(by_hand, dtype=int)).mean() < 4


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16", "F", "LA"])
def test_a_large_image_of_any_mode_is_reduced_before_conversion_keeping_its_content(mode):
    img = gradient(1300, 1000)
    if mode == "I;16":
        src = Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257)
    elif mode == "F":
        src = Image.fromarray(np.asarray(img.convert("L"), dtype=np.float32))
    elif mode == "P":
        src = img.quantize(64)
    else:
        src = img.convert(mode)
    fmt = "TIFF" if mode == "F" else "PNG"
    decoded = open_upload(upload(encode(src, fmt), f"big.{fmt.lower()}"))
    # factor 1000 // DECODE_MIN_SIDE = 3: 1300x1000 -> 434x334, RGB
    assert decoded.image.mode == "RGB" and decoded.image.size == (434, 334)
    expected = np.asarray((src.convert("RGB") if mode not in ("I;16", "F") else img.convert("L").convert("RGB")).resize((434, 334), Image.Resampling.BOX), dtype=float)
    if mode in ("I;16", "F"):  # deep data is stretched over 0..255
        expected = (expected - expected.min()) * (255 / (expected.max() - expected.min()))
    assert np.abs(np.asarray(decoded.image, dtype=float) - expected).mean() < 6


def test_a_very_elongated_image_is_reduced_by_its_longer_side():
    decoded = open_upload(upload(encode(Image.new("RGBA", (600, 20000), (10, 200, 30, 255)), "PNG"), "strip.png"))
    # 600 // 320 = 1, but 20000 / DECODE_MAX_SIDE needs a factor of 5: 120 x 4000.
    assert decoded.image.size == (120, 4000) and decoded.image.getpixel((60, 2000)) == (10, 200, 30)


def test_it_spreads_16_bit_greyscale_over_the_8_bit_range():
    arr = np.linspace(1000, 3000, 64 * 48).reshape(48, 64).astype(np.uint16)
    decoded = open_upload(upload(encode(Image.fromarray(arr), "PNG"), "deep.png"))
    values = np.asarray(decoded.image)[..., 0]
    assert values.min() == 0 and values.max() == 255


def test_it_applies_the_exif_orientation():
    img = gradient(80, 40)
    decoded = open_upload(upload(rotated_jpeg(img)))
    assert decoded.image.size == (40, 80)
    by_hand = img.transpose(Image.Transpose.ROTATE_270)
    diff = np.abs(np.asarray(decoded.image, dtype=int) - np.asarray(by_hand, dtype=int)).mean()
    assert diff < 4  # JPEG noise only


def test_it_takes_the_first_frame_of_an_animation():
    frames = [Image.new("RGB", (20, 20), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, g, b = open_upload(upload(data, "anim.gif")).image.getpixel((10, 10))
    assert r > 200 and b < 50


def test_it_refuses_a_file_over_the_size_cap_with_413(settings):
    settings.BREEDLAB_MAX_IMAGE_BYTES = 2048
    with pytest.raises(ImageRejected) as err:
        open_upload(upload(b"\xff" * 4096, "big.jpg"))
    assert err.value.status == 413
    assert "big.jpg" in err.value.message and "MB" in err.value.message


def test_it_refuses_an_empty_file():
    with pytest.raises(ImageRejected) as err:
        open_upload(upload(b"", "empty.jpg"))
    assert err.value.status == 400 and "empty" in err.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"hello, I am a text file\n" * 10,
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS would run Ghostscript: never tried
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
    ],
    ids=["text", "pdf", "eps", "svg"],
)
def test_it_refuses_what_is_not_a_supported_image(data):
    with pytest.raises(ImageRejected) as err:
        open_upload(upload(data, "thing.jpg"))
    assert err.value.status == 400
    assert "not an image in a supported format" in err.value.message


def test_it_refuses_an_icon_file_as_unsupported():
    with pytest.raises(ImageRejected, match="supported format"):
        open_upload(upload(encode(gradient(32, 32), "ICO"), "favicon.ico"))


def test_it_refuses_a_truncated_jpeg_with_a_clear_message():
    data = encode(gradient(256, 256), "JPEG", quality=90)
    with pytest.raises(ImageRejected) as err:
        open_upload(upload(data[: len(data) // 2], "half.jpg"))
    assert err.value.status == 400
    assert "truncated" in err.value.message


def test_it_refuses_a_corrupt_png():
    data = bytearray(encode(gradient(), "PNG"))
    data[60:120] = b"\x00" * 60  # inside the compressed pixel data
    with pytest.raises(ImageRejected) as err:
        open_upload(upload(bytes(data), "bad.png"))
    assert err.value.status == 400


def test_it_refuses_too_many_pixels_before_decoding_them(settings):
    settings.BREEDLAB_MAX_IMAGE_PIXELS = 10_000
    with pytest.raises(ImageRejected) as err:
        open_upload(upload(encode(Image.new("L", (200, 200)), "PNG"), "wide.png"))
    assert err.value.status == 400 and "pixels" in err.value.message


def test_it_refuses_a_decompression_bomb(settings):
    settings.BREEDLAB_MAX_IMAGE_PIXELS = 1_000_000
    bomb = encode(Image.new("1", (8000, 8000)), "PNG", optimize=True)  # a few kB, 64 megapixels
    assert len(bomb) < 50_000
    with pytest.raises(ImageRejected, match="pixels"):
        open_upload(upload(bomb, "bomb.png"))


def test_it_keeps_only_the_base_name_of_the_upload():
    decoded = open_upload(upload(encode(gradient(), "PNG"), "../../etc/\x00pass\nwd.png"))
    assert decoded.original_name == "passwd.png"


def test_the_stored_copy_is_a_clean_jpeg_under_a_generated_name():
    img = gradient(3000, 1000)
    stored = imaging.stored_file(img)
    assert re.fullmatch(r"[0-9a-f]{32}\.jpg", stored.name)
    with Image.open(io.BytesIO(stored.read())) as again:
        assert again.format == "JPEG" and max(again.size) == imaging.STORED_MAX_SIDE
        assert not again.getexif()


# ---- fuzzing: whatever the bytes, only ImageRejected (or a good RGB image) comes out -------------
_SEEDS = [encode(gradient(24, 16), fmt) for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")]


def _check(data: bytes) -> None:
    try:
        decoded = imaging.open_upload(upload(data, "fuzz.bin"))
    except ImageRejected as exc:
        assert exc.status in (400, 413) and exc.message
    else:
        assert decoded.image.mode == "RGB" and decoded.image.width > 0


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=2048))
def test_fuzz_random_bytes_only_raise_image_rejected(data):
    _check(data)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(1, 10_000)),
)
def test_fuzz_mutated_images_only_raise_image_rejected(seed, edits, cut):
    data = bytearray(seed)
    for pos, value in edits:
        data[pos % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data) + 1]
    _check(bytes(data))


def test_a_plain_jpeg_is_stored_as_uploaded_without_re_encoding():
    data = encode(gradient(300, 200), "JPEG", quality=85)
    decoded = open_upload(upload(data))
    assert decoded.plain_jpeg == data
    assert imaging.stored_file(decoded.image, decoded.plain_jpeg).read() == data


@pytest.mark.parametrize(
    "variant",
    ["exif", "comment", "trailing", "icc", "reduced"],
)
def test_a_jpeg_with_metadata_extra_bytes_or_a_reduced_decode_is_re_encoded(variant):
    img = gradient(300, 200)
    if variant == "exif":
        exif = Image.Exif()
        exif[0x8825] = {2: (55.0, 45.0, 0.0)}  # GPS
        data = encode(img, "JPEG", exif=exif.tobytes())
    elif variant == "comment":
        data = encode(img, "JPEG", comment=b"secret")
    elif variant == "trailing":
        data = encode(img, "JPEG") + b"<script>alert(1)</script>"
    elif variant == "icc":
        data = encode(img, "JPEG", icc_profile=b"\x00" * 128)
    else:
        data = encode(gradient(1400, 1000), "JPEG")
    decoded = open_upload(upload(data))
    assert decoded.plain_jpeg is None
    stored = imaging.stored_file(decoded.image, decoded.plain_jpeg).read()
    assert stored != data
    with Image.open(io.BytesIO(stored)) as again:
        assert not again.getexif() and "comment" not in again.info and "icc_profile" not in again.info
