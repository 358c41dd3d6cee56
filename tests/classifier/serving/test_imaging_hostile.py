"""Hostile photos against classifier.serving.imaging: truncated files of every accepted format, decompression
bombs whose headers promise billions of pixels, and a corpus of both plus mutated variants decoded
in a separate process under a hard memory limit (RLIMIT_AS): only ImageRejected may come out.

(tests/classifier/serving/test_imaging.py fuzzes random and mutated bytes with hypothesis in-process.)
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from classifier.serving.imaging import ImageRejected, decode_bytes

ROOT = Path(__file__).resolve().parents[3]
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
HEADROOM_MB = 512  # the largest photo the default pixel cap lets through needs about 40 M x 3 bytes, twice


def noisy_image(w: int = 128, h: int = 96) -> Image.Image:
    """Noise compresses badly, so every cut point lands inside the pixel data."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


# ---- truncation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.35, 0.6, 0.9, 0.99])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_truncated_photo_of_every_format_is_refused_with_one_clear_sentence(fmt, fraction):
    data = encode(noisy_image(), fmt)
    cut = data[: max(1, int(len(data) * fraction))]
    with pytest.raises(ImageRejected) as err:
        decode_bytes(cut, name=f"cut.{fmt.lower()}")
    assert err.value.status == 400
    message = err.value.message
    assert message.startswith(f"cut.{fmt.lower()} ") and message.endswith(".") and "\n" not in message
    assert any(word in message for word in ("truncated", "corrupt", "not an image")), message


# ---- decompression bombs -----------------------------------------------------------------------------
def jpeg_bomb() -> bytes:
    """A real 16x16 JPEG whose frame header (SOF0) claims 60000 x 60000 pixels."""
    data = bytearray(encode(noisy_image(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5: sof + 9] = struct.pack(">HH", 60000, 60000)
    return bytes(data)


def png_bomb() -> bytes:
    """A 16x16 PNG whose IHDR (with a valid CRC) claims 100000 x 100000 pixels."""
    data = bytearray(encode(noisy_image(16, 16), "PNG"))
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def png_zip_bomb() -> bytes:
    """A genuine bomb: 10000 x 10000 one-bit pixels (100 megapixels) in a few kilobytes."""
    return encode(Image.new("1", (10_000, 10_000)), "PNG", optimize=True)


def gif_bomb() -> bytes:
    data = bytearray(encode(noisy_image(16, 16).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)  # logical screen
    return bytes(data)


def bmp_bomb() -> bytes:
    data = bytearray(encode(noisy_image(16, 16), "BMP"))
    data[18:26] = struct.pack("<ii", 50_000, 50_000)
    return bytes(data)


def tiff_bomb() -> bytes:
    """A hand-made little-endian TIFF: 100000 x 100000 8-bit grey, one strip of 16 bytes."""
    tags = [(256, 4, 100_000), (257, 4, 100_000), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8 + 2 + 8 * 12 + 4),
            (278, 4, 100_000), (279, 4, 16)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", tag, typ, 1, value) for tag, typ, value in tags)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + b"\x00" * 16


def webp_bomb() -> bytes:
    """An extended (VP8X) WebP whose canvas claims 16384 x 16384 pixels."""
    img = noisy_image(16, 16).convert("RGBA")
    img.putalpha(Image.linear_gradient("L").resize((16, 16)))  # real transparency: an ALPH chunk, so VP8X
    data = bytearray(encode(img, "WEBP", quality=50))
    assert data[12:16] == b"VP8X"
    data[24:30] = (16383).to_bytes(3, "little") + (16383).to_bytes(3, "little")
    return bytes(data)


BOMBS = {"jpeg": jpeg_bomb, "png": png_bomb, "png-zip": png_zip_bomb, "gif": gif_bomb, "bmp": bmp_bomb,
         "tiff": tiff_bomb, "webp": webp_bomb}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_decompression_bomb_is_refused_without_decoding_it(kind):
    data = BOMBS[kind]()
    assert len(data) < 100_000
    with pytest.raises(ImageRejected) as err:
        decode_bytes(data, name=f"bomb-{kind}")
    assert err.value.status == 400
    if kind != "webp":  # libwebp itself refuses the canvas that does not match its frame
        assert "pixels" in err.value.message, err.value.message


# ---- everything at once, in a process that cannot take more memory than a photo needs -----------------
def hostile_corpus(folder: Path) -> dict[str, str]:
    """Writes the files; returns name -> what must happen ("rejected", "ok", or "either")."""
    expect: dict[str, str] = {}

    def add(name: str, data: bytes, outcome: str) -> None:
        (folder / name).write_bytes(data)
        expect[name] = outcome

    rng = np.random.default_rng(7)
    for fmt in FORMATS:
        whole = encode(noisy_image(), fmt)
        add(f"whole-{fmt}", whole, "ok")
        for fraction in (0.05, 0.3, 0.6, 0.9):
            add(f"cut-{fraction}-{fmt}", whole[: int(len(whole) * fraction)], "rejected")
        for i in range(40):  # mutated: a few bytes overwritten, sometimes cut as well
            data = bytearray(whole)
            for pos in rng.integers(0, len(data), size=int(rng.integers(1, 9))):
                data[pos] = int(rng.integers(0, 256))
            if i % 3 == 0:
                data = data[: int(rng.integers(1, len(data)))]
            add(f"mutated-{i:02d}-{fmt}", bytes(data), "either")
    for kind, make in BOMBS.items():
        add(f"bomb-{kind}", make(), "rejected")
    for i in range(20):
        add(f"random-{i:02d}", rng.integers(0, 256, size=int(rng.integers(0, 4096)), dtype=np.uint8).tobytes(), "either")
    # The largest photo the default cap (40 megapixels) lets through decodes within the limit.
    add("largest-allowed.png", encode(Image.new("L", (6000, 6600), 128), "PNG"), "ok")
    return expect


def test_hostile_files_never_get_past_the_validation_error_or_the_memory_limit(tmp_path):
    corpus = tmp_path / "hostile"
    corpus.mkdir()
    expect = hostile_corpus(corpus)
    result = subprocess.run(
        [sys.executable, "-m", "tests.classifier.serving.decode_under_limit", str(corpus), str(HEADROOM_MB)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    outcomes = {line["name"]: line for line in lines if "name" in line}
    assert set(outcomes) == set(expect)
    escaped = [f"{n}: {o['detail']}" for n, o in outcomes.items() if o["outcome"] == "error"]
    assert not escaped, "only ImageRejected may come out:\n" + "\n".join(escaped)
    # imaging turns a MemoryError into a refusal too: here that would mean the fence was hit.
    fenced = [n for n, o in outcomes.items() if "MemoryError" in o["detail"]]
    assert not fenced, f"these needed more than {HEADROOM_MB} MB: {fenced}"
    wrong = [f"{n}: expected {expect[n]}, got {o['outcome']} ({o['detail']})" for n, o in outcomes.items()
             if expect[n] != "either" and o["outcome"] != expect[n]]
    assert not wrong, "\n".join(wrong)
    # The largest allowed photo is accepted and reduced to serving size before any conversion.
    mode, size = outcomes["largest-allowed.png"]["detail"].split()
    w, h = (int(v) for v in size.split("x"))
    assert mode == "RGB" and min(w, h) <= 512 and abs(w / h - 6000 / 6600) < 0.01
    growth = lines[-1]["peak_rss_growth_mb"]
    assert growth < HEADROOM_MB, growth
