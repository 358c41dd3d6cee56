"""Images on disk: scanning an ImageFolder, decoding once, seeded splits and transform presets.

Layout: ``root/<class name>/<image>``. Files are checked cheaply while scanning (extension and
image header) and decoded exactly once, in worker processes, into uint8 tensors whose shorter
side is the backbone's resize size. Every later epoch crops, flips and normalises those tensors,
with a random generator seeded per (seed, phase, epoch, image) so that results do not depend on
the number of workers.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from training.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Sample:
    """One image: where it is (absolute and relative to its dataset root) and its class index."""

    path: Path
    relpath: str
    label: int


# ---------------------------------------------------------------------------------------------
# Scanning and validation
# ---------------------------------------------------------------------------------------------
def _check_header(path: Path) -> str | None:
    """Return None when ``path`` opens as an image, else a short reason."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"not an image file extension ({path.suffix or 'none'})"
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image ({type(exc).__name__}: {exc})".rstrip()
    return None


def scan_image_folder(root: str | os.PathLike[str]) -> tuple[list[str], list[Sample], list[tuple[str, str]]]:
    """Scan ``root/<class>/<image>``.

    Returns ``(classes, samples, skipped)``: class names sorted, samples in sorted order, and
    ``(relpath, reason)`` for every file that is not a readable image. Hidden files and files
    directly in ``root`` are ignored. Raises DataError when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"Data folder {root} does not exist or is not a folder.")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes: list[str] = []
    samples: list[Sample] = []
    skipped: list[tuple[str, str]] = []
    for class_dir in class_dirs:
        files = sorted(
            p for p in class_dir.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        good: list[Path] = []
        for f in files:
            reason = _check_header(f)
            if reason is None:
                good.append(f)
            else:
                skipped.append((f.relative_to(root).as_posix(), reason))
        if not good:
            continue
        label = len(classes)
        classes.append(class_dir.name)
        samples.extend(Sample(f, f.relative_to(root).as_posix(), label) for f in good)
    return classes, samples, skipped


def check_classes(classes: Sequence[str], samples: Sequence[Sample], *, root: Path | str, min_per_class: int = 2) -> None:
    """DataError unless there are >= 2 classes and every class has >= ``min_per_class`` images."""
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise DataError(f"{root} needs at least two class folders with images; found {found}.")
    counts = np.bincount([s.label for s in samples], minlength=len(classes))
    small = [f"{classes[i]} ({int(c)})" for i, c in enumerate(counts) if c < min_per_class]
    if small:
        raise DataError(f"Every class needs at least {min_per_class} images; too few in: {', '.join(small)}.")


def warn_skipped(skipped: Sequence[tuple[str, str]]) -> None:
    """One warning that lists every skipped file."""
    if skipped:
        listing = "; ".join(f"{rel} ({why})" for rel, why in skipped)
        warnings.warn(f"Skipped {len(skipped)} unreadable file(s): {listing}", stacklevel=2)


# ---------------------------------------------------------------------------------------------
# Decoding (once) and preprocessing
# ---------------------------------------------------------------------------------------------
def resize_size_for(image_size: int, crop_pct: float) -> int:
    return int(math.floor(image_size / crop_pct + 1e-6))


def decode_image(
    image: Image.Image, resize_size: int, interpolation: str = "bicubic", *, orient: bool = True
) -> torch.Tensor:
    """PIL image -> uint8 CHW tensor, RGB, EXIF-rotated (unless ``orient`` is False: already done),
    shorter side == ``resize_size``.

    training.imaging's path (shared with serving): a large image is first reduced by an integer
    factor in its own mode, then converted to RGB, then resized once with antialiasing."""
    from training import imaging

    value = imaging.orientation(image) if orient else 1
    image = imaging.to_rgb(imaging.shrink(image, 2 * resize_size))
    image = imaging.resize_shorter(imaging.orient(image, value), resize_size, interpolation)
    return TF.pil_to_tensor(image)


class _DecodeDataset(Dataset):
    def __init__(self, paths: Sequence[Path], resize_size: int, interpolation: str) -> None:
        self.paths = list(paths)
        self.resize_size = resize_size
        self.interpolation = interpolation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            with Image.open(self.paths[i]) as img:
                img.load()
                return i, decode_image(img, self.resize_size, self.interpolation), None
        except (OSError, ValueError, SyntaxError) as exc:
            return i, None, f"cannot decode ({type(exc).__name__}: {exc})"


def _collate_list(batch: list) -> list:
    return batch


def resolve_workers(num_workers: int) -> int:
    """-1 = auto: one worker per core, at most 8 (0 = decode in this process).

    A daemonic process (a multiprocessing pool worker, e.g. Celery's prefork pool) cannot start
    child processes, so there it is always 0.
    """
    if multiprocessing.current_process().daemon:
        return 0
    if num_workers >= 0:
        return num_workers
    return max(0, min(8, (os.cpu_count() or 1)))


def decode_images(
    paths: Sequence[Path],
    *,
    resize_size: int,
    interpolation: str = "bicubic",
    num_workers: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[list[torch.Tensor | None], dict[int, str]]:
    """Decode every image once (in worker processes when ``num_workers`` > 0).

    Returns the tensors (None where decoding failed) and ``{index: reason}`` for failures.
    ``on_progress(done, total)`` is called after each chunk; it may raise to cancel.
    """
    dataset = _DecodeDataset(paths, resize_size, interpolation)
    workers = min(resolve_workers(num_workers), max(1, len(paths) // 16))
    loader = DataLoader(
        dataset,
        batch_size=16,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate_list,
        persistent_workers=False,
    )
    images: list[torch.Tensor | None] = [None] * len(paths)
    failures: dict[int, str] = {}
    done = 0
    for chunk in loader:
        for i, tensor, error in chunk:
            images[i] = tensor
            if error is not None:
                failures[i] = error
        done += len(chunk)
        if on_progress is not None:
            on_progress(done, len(paths))
    return images, failures


# ---------------------------------------------------------------------------------------------
# Transform presets: keyword-only classes on decoded uint8 tensors
# ---------------------------------------------------------------------------------------------
def _normalize(img_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (img_uint8.float().div_(255.0) - mean) / std


class EvalTransform:
    """Centre crop ``size`` x ``size`` from the decoded image, scale to [0, 1], normalise."""

    def __init__(self, *, size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        self.size = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _, h, w = img.shape
        if h < self.size or w < self.size:
            img = TF.resize(img, self.size, interpolation=InterpolationMode.BICUBIC, antialias=True)
        img = TF.center_crop(img, [self.size, self.size])
        return _normalize(img, self.mean, self.std)


class TrainTransform:
    """Random resized crop + horizontal flip (+ optional brightness/contrast/saturation jitter).

    All randomness comes from the ``generator`` passed per call, so the same seed gives the
    same views whatever process applies the transform.
    """

    def __init__(
        self,
        *,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.35, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
        jitter: float = 0.0,
    ) -> None:
        self.size = size
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.flip = flip
        self.jitter = jitter
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def _crop_box(self, h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
        area = h * w
        for _ in range(10):
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * float(torch.rand(1, generator=g)))
            log_r = self.log_ratio[0] + (self.log_ratio[1] - self.log_ratio[0]) * float(torch.rand(1, generator=g))
            aspect = math.exp(log_r)
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
                left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
                return top, left, ch, cw
        side = min(h, w)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, img: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        g = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,))))
        _, h, w = img.shape
        top, left, ch, cw = self._crop_box(h, w, g)
        img = TF.resized_crop(
            img, top, left, ch, cw, [self.size, self.size], interpolation=InterpolationMode.BILINEAR, antialias=True
        )
        if self.flip and float(torch.rand(1, generator=g)) < 0.5:
            img = TF.hflip(img)
        x = img.float().div_(255.0)
        if self.jitter > 0:
            factors = 1.0 + (torch.rand(3, generator=g) * 2 - 1) * self.jitter
            x = x * factors[0]  # brightness
            mean = x.mean()
            x = (x - mean) * factors[1] + mean  # contrast
            gray = x.mean(dim=0, keepdim=True)
            x = ((x - gray) * factors[2] + gray).clamp_(0.0, 1.0)  # saturation
        return (x - self.mean) / self.std


def train_transform(preset: str, *, size: int, mean: Sequence[float], std: Sequence[float]) -> EvalTransform | TrainTransform:
    """The augmentation presets: "none" (evaluation view), "light", "standard"."""
    if preset == "none":
        return EvalTransform(size=size, mean=mean, std=std)
    if preset == "light":
        return TrainTransform(size=size, mean=mean, std=std, scale=(0.6, 1.0), flip=True)
    if preset == "standard":
        return TrainTransform(size=size, mean=mean, std=std, scale=(0.3, 1.0), flip=True, jitter=0.2)
    raise DataError(f"Unknown augmentation preset {preset!r}; valid presets are none, light, standard.")


def sample_seed(seed: int, phase: int, epoch: int, index: int) -> int:
    """A per-image seed: the same view whatever process or batch computes it."""
    return int(np.random.SeedSequence([seed, phase, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------
class TransformedImages(Dataset):
    """Decoded images -> (normalised tensor, label), one seeded generator per (epoch, image)."""

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        labels: Sequence[int],
        transform: Callable[..., torch.Tensor],
        *,
        seed: int = 0,
        phase: int = 0,
        epoch: int = 0,
        view: int | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform
        self.seed, self.phase, self.epoch, self.view = seed, phase, epoch, view

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        # A fixed ``view`` makes the sample independent of the epoch (cached views).
        key = self.epoch if self.view is None else 1_000_000 + self.view
        g = torch.Generator().manual_seed(sample_seed(self.seed, self.phase, key, i))
        return self.transform(self.images[i], g), int(self.labels[i])


def epoch_order(n: int, *, seed: int, phase: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(sample_seed(seed, phase, epoch, -1 & 0xFFFFFFFF))
    return torch.randperm(n, generator=g)


def image_batches(
    dataset: Dataset,
    *,
    batch_size: int,
    order: Sequence[int] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` in the given ``order`` (None = sequential)."""
    sampler = list(range(len(dataset))) if order is None else [int(i) for i in order]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=False,
    )


def cached_batches(
    views: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    order: torch.Tensor | None = None,
    view_choice: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches from cached tensors ``views[V, N, ...]``; ``view_choice[N]`` picks a view per image."""
    n = views.shape[1]
    idx = torch.arange(n) if order is None else order
    for start in range(0, n, batch_size):
        b = idx[start : start + batch_size]
        if view_choice is None:
            x = views[0, b]
        else:
            x = views[view_choice[b], b]
        yield x, labels[b]


def num_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size
