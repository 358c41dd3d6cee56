"""Uploaded photos: validate and decode untrusted bytes, and store a clean re-encoded copy.

1. Size: more than ``settings.BREEDLAB_MAX_IMAGE_BYTES`` is refused with 413 before decoding.
2. Format: only JPEG, PNG, GIF, WebP, BMP and TIFF decoders are ever tried (never EPS/PSD/...).
3. Pixels: the header's width x height above ``settings.BREEDLAB_MAX_IMAGE_PIXELS`` is refused
   before the pixels are decoded; Pillow's own decompression-bomb check is an error too.
4. Decoding errors (corrupt, truncated) are refused with 400 and one clear sentence.
5. Large JPEGs (phone photos) are decoded by libjpeg at 1/2, 1/4 or 1/8 scale, keeping the
   shorter side at least ``DECODE_MIN_SIDE`` px: more than the model (at most 300 px) uses, at a
   fraction of the time. Every other large image is reduced by an integer factor right after
   decoding, *before* its mode is converted (training.imaging.shrink): 16-bit, float, RGBA and
   palette images never get a full-size float or RGB copy, and the full-size image is closed
   as soon as the reduced one exists.
6. The EXIF orientation is applied (to the reduced image), every mode becomes RGB
   (transparency over white, 16-bit/float greyscale rescaled in float32), animations give
   their first frame. training.imaging holds these steps; training's decoding uses them too.
7. What is stored lives under a generated name in ``MEDIA_ROOT/predictions/``, without
   metadata: the uploaded bytes themselves when they are a *plain* JPEG (``plain_jpeg``: only
   image segments, no EXIF/XMP/ICC/comment/APPn other than JFIF, nothing after the end marker,
   decoded at full size, at most ``STORED_MAX_SIDE``), else a JPEG re-encoded from the pixels.

Imports training.imaging (besides Django and libraries); nothing of classifier/.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import unicodedata
import uuid
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.utils.translation import gettext as _
from PIL import Image, ImageFile, UnidentifiedImageError

from training import imaging as fast

log = logging.getLogger(__name__)

# Pillow format names -> what users call them. Only these decoders are ever tried.
ACCEPTED_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "GIF": "GIF", "WEBP": "WebP", "BMP": "BMP", "TIFF": "TIFF"}
ACCEPTED_LABEL = "JPEG, PNG, GIF, WebP, BMP, TIFF"
_DECODERS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]  # MPO (multi-picture JPEG) comes from the JPEG decoder
DECODE_MIN_SIDE = 320  # large images are decoded/reduced down to (at least) this shorter side
DECODE_MAX_SIDE = 4096  # ... and a very elongated one until its longer side is at most this
STORED_MAX_SIDE = 2048  # stored copies are at most this many pixels on their longer side
STORED_JPEG_QUALITY = 90

# In a web process a decompression-bomb warning is an attack, not a curiosity.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageRejected(Exception):
    """An upload that is not a usable photo. ``status`` is the HTTP status (400 or 413)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # RGB, EXIF orientation applied, pixels loaded
    format: str  # "JPEG", "PNG", ...
    sha256: str  # of the uploaded bytes
    original_name: str
    size_bytes: int
    plain_jpeg: bytes | None = None  # the upload itself when it may be stored as is (see plain_jpeg)

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB"


def clean_filename(name: str | None) -> str:
    """The uploaded file's base name, without directories or control characters, at most 255 characters."""
    base = os.path.basename((name or "").replace("\\", "/"))
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    return base[:255]


def read_upload(upload: UploadedFile, *, max_bytes: int | None = None) -> bytes:
    """The upload's bytes; ImageRejected(413) when it is larger than the cap, (400) when empty."""
    limit = settings.BREEDLAB_MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    name = clean_filename(upload.name) or _("the upload")
    if upload.size is not None and upload.size > limit:
        raise ImageRejected(
            _("%(name)s is %(size)s; photos may be at most %(limit)s.")
            % {"name": name, "size": _megabytes(upload.size), "limit": _megabytes(limit)},
            status=413,
        )
    upload.seek(0)
    data = upload.read(limit + 1)
    if len(data) > limit:  # a size that lied
        raise ImageRejected(
            _("%(name)s is larger than %(limit)s.") % {"name": name, "limit": _megabytes(limit)}, status=413
        )
    if not data:
        raise ImageRejected(_("%(name)s is empty.") % {"name": name})
    return data


def decode_bytes(data: bytes, *, name: str = "", max_pixels: int | None = None) -> tuple[Image.Image, str]:
    """Decode untrusted bytes into an RGB image (EXIF orientation applied) and its format name.

    Raises ImageRejected(400) for anything that is not a decodable photo in an accepted format.
    """
    limit = settings.BREEDLAB_MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    label = name or _("The upload")
    # Pillow's own bomb check uses the same limit (its warning is an error, see above); the
    # explicit header check below comes first and gives the clearer message.
    Image.MAX_IMAGE_PIXELS = limit
    try:
        img = Image.open(io.BytesIO(data), formats=_DECODERS)
    except UnidentifiedImageError:
        raise ImageRejected(
            _("%(name)s is not an image in a supported format (%(formats)s).") % {"name": label, "formats": ACCEPTED_LABEL}
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected(_("%(name)s has more than %(limit)s pixels.") % {"name": label, "limit": f"{limit:,}"}) from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is the same user error
        raise ImageRejected(_("%(name)s is corrupt: %(why)s.") % {"name": label, "why": _short(exc)}) from None
    try:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageRejected(_("%(name)s has no pixels.") % {"name": label})
        if width * height > limit:
            raise ImageRejected(
                _("%(name)s has %(pixels)s pixels (%(w)s×%(h)s); at most %(limit)s are accepted.")
                % {"name": label, "pixels": f"{width * height:,}", "w": width, "h": height, "limit": f"{limit:,}"}
            )
        fmt = ACCEPTED_FORMATS.get(img.format or "", "")
        if not fmt:
            raise ImageRejected(
                _("%(name)s is not an image in a supported format (%(formats)s).") % {"name": label, "formats": ACCEPTED_LABEL}
            )
        # libjpeg picks the smallest 1/2^k scale that is at least this size (DCT-domain scaling).
        fast.draft_jpeg(img, DECODE_MIN_SIDE)
        try:
            img.seek(0)  # the first frame of an animation
            img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageRejected(_("%(name)s has more than %(limit)s pixels.") % {"name": label, "limit": f"{limit:,}"}) from None
        except Exception as exc:  # noqa: BLE001 - truncated/corrupt data surfaces as OSError, SyntaxError, ValueError, ...
            if "truncated" in str(exc).lower():
                raise ImageRejected(_("%(name)s is truncated: the file ends before the image does.") % {"name": label}) from None
            raise ImageRejected(_("%(name)s is corrupt: %(why)s.") % {"name": label, "why": _short(exc)}) from None
        rgb = fast.reduce_for(img, DECODE_MIN_SIDE, DECODE_MAX_SIDE)  # reduced, then RGB, then oriented
        if rgb is img:  # already small, RGB and upright: ``img`` is closed below, keep its pixels
            rgb = img.copy()
        rgb.info = {}  # no comment, EXIF, ICC or XMP travels on (Pillow would write a comment back)
        if rgb.width * rgb.height > limit:  # defensive: orientation never adds pixels
            raise ImageRejected(_("%(name)s has too many pixels.") % {"name": label})
        return rgb, (img.format or fmt)
    except ImageRejected:
        raise
    except Exception as exc:  # noqa: BLE001 - mode conversion of exotic/corrupt data
        raise ImageRejected(_("%(name)s cannot be read as a photo: %(why)s.") % {"name": label, "why": _short(exc)}) from None
    finally:
        img.close()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    return text[:200]


def open_upload(upload: UploadedFile) -> DecodedImage:
    """Validate and decode one uploaded file (ImageRejected with the HTTP status on bad input)."""
    name = clean_filename(upload.name)
    data = read_upload(upload)
    image, fmt = decode_bytes(data, name=name)
    keep = data if fmt == "JPEG" and max(image.size) <= STORED_MAX_SIDE and plain_jpeg(data, image.size) else None
    return DecodedImage(
        image=image, format=fmt, sha256=hashlib.sha256(data).hexdigest(), original_name=name, size_bytes=len(data),
        plain_jpeg=keep,
    )


# Markers a plain baseline/progressive JPEG needs: SOF0-2, DHT, DQT, DRI, SOS, APP0 (JFIF).
_PLAIN_SEGMENTS = {0xC0, 0xC1, 0xC2, 0xC4, 0xDB, 0xDD, 0xE0}


def plain_jpeg(data: bytes, size: tuple[int, int]) -> bool:
    """Whether ``data`` is a JPEG made of image segments only, ``size`` pixels as decoded.

    Walks the segment headers up to the first scan (a few dozen bytes, not the pixels): any
    EXIF (APP1, so no orientation either), ICC, XMP, comment or other segment, a size that differs
    from the decoded image (a reduced decode), or anything after the end-of-image marker means
    the photo is re-encoded instead."""
    if len(data) < 4 or data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
        return False
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # start of scan: from here on, entropy-coded image data
            return _ends_after_scans(data, i)
        if marker not in _PLAIN_SEGMENTS or length < 2:
            return False
        if marker == 0xE0 and data[i + 4 : i + 9] != b"JFIF\x00":
            return False
        if marker in (0xC0, 0xC1, 0xC2):
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            if (width, height) != tuple(size):
                return False
        i += 2 + length
    return False


def _ends_after_scans(data: bytes, start: int) -> bool:
    """A progressive JPEG has several scans (and DHT tables between them): only image markers,
    RSTn and stuffed bytes may follow the first scan, and the file ends at the first EOI."""
    n = len(data)
    i = data.find(b"\xff", start + 2)
    while 0 <= i < n - 1:
        marker = data[i + 1]
        if marker == 0xD9:
            return i == n - 2
        if marker in (0x00, 0xFF) or 0xD0 <= marker <= 0xD7:
            i = data.find(b"\xff", i + 2 if marker != 0xFF else i + 1)
            continue
        if marker not in (0xC4, 0xDA, 0xDB, 0xDD):
            return False
        i = data.find(b"\xff", i + 2 + int.from_bytes(data[i + 2 : i + 4], "big"))
    return False


def encode_for_storage(image: Image.Image) -> bytes:
    """A clean JPEG of the pixels (longer side at most STORED_MAX_SIDE), without metadata."""
    copy = image if max(image.size) <= STORED_MAX_SIDE else image.copy()
    if copy is not image:
        copy.thumbnail((STORED_MAX_SIDE, STORED_MAX_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    copy.convert("RGB").save(buffer, format="JPEG", quality=STORED_JPEG_QUALITY, optimize=False)
    return buffer.getvalue()


def stored_file(image: Image.Image, plain: bytes | None = None) -> ContentFile:
    """A ContentFile with a generated name, to assign to ``Prediction.image`` (upload_to adds predictions/Y/m/).

    ``plain``: the upload's own bytes when ``plain_jpeg`` passed them (stored without re-encoding)."""
    return ContentFile(plain if plain is not None else encode_for_storage(image), name=f"{uuid.uuid4().hex}.jpg")
