"""The frozen part's outputs, computed once and reused: the feature cache of a run.

For each part (train / val / test) the store holds, per cached view of each photo:

- ``prefix``: the output of the frozen stages (``stages[:split]``), the input of the stages
  the fine-tune phase trains (only when a split is given);
- ``features``: the pooled feature vector (the head's input) of the pretrained network.

Train photos get ``views`` views: view 0 is the plain evaluation view, the others are seeded
augmented views (a per-photo generator, so a view is the same whatever process computes it).
Validation and test photos get the evaluation view only. ``measure_costs`` times the first
batches so that the plan (``training.plan``) knows what a view and an epoch cost here.

Imports torch and training.data only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from training.data import (
    EvalTransform,
    TransformedImages,
    cached_batches,
    image_batches,
    resolve_workers,
    sample_seed,
    train_transform,
)
from training.model import TransferModel
from training.plan import Costs

VIEW_PHASE = 7  # seed-stream id for cached augmented views
_CHUNK = 16


class FeatureStore:
    def __init__(
        self,
        model: TransferModel,
        pre: dict[str, Any],
        device: torch.device,
        *,
        seed: int,
        augmentation: str,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.model = model
        self.pre = pre
        self.device = device
        self.seed = seed
        self.augmentation = augmentation
        self.progress = progress or (lambda what, done, total: None)
        self.eval_tf = EvalTransform(size=pre["image_size"], mean=pre["mean"], std=pre["std"])
        self.aug_tf = train_transform(augmentation, size=pre["image_size"], mean=pre["mean"], std=pre["std"])
        self.store: dict[tuple[str, str], torch.Tensor] = {}
        self.images: dict[str, Sequence[torch.Tensor]] = {}
        self.labels: dict[str, torch.Tensor] = {}
        self.views = 1
        self.split: int | None = None
        self.seconds = 0.0

    def _autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)

    # ---- timing --------------------------------------------------------------------------
    def measure_costs(self, images: Sequence[torch.Tensor], labels: torch.Tensor, *, unfreeze: int) -> Costs:
        """Seconds per image of the frozen prefix, the trainable tail (step and forward), the
        whole network's step (CUDA only) and the head fit, timed on a few real photos."""
        model = self.model
        k = model.num_stages
        split = k - unfreeze
        n = min(len(images), _CHUNK)
        ds = TransformedImages(list(images[:n]), labels[:n].tolist(), self.eval_tf)
        x = torch.stack([ds[i][0] for i in range(n)])
        y = labels[:n].to(self.device)
        x = self._to_device(x)
        was_training = model.training
        model.eval()

        def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
            # The fastest of a few repeats: on a shared CPU one repeat can be slowed several-fold
            # by other processes (measured: a 114 ms/photo estimate against 34 ms/photo for the
            # whole feature pass right after), and an inflated cost makes the plan too small.
            fn()  # warm-up (allocations, kernels, autotuning)
            best = float("inf")
            for _ in range(repeats):
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
            return best / n

        with torch.no_grad(), self._autocast():
            mid = model.forward_stages(x, 0, split)
            prefix_forward = timed(lambda: model.forward_stages(x, 0, split))
            tail_forward = timed(lambda: model.forward_from(mid, split))
        params = [p for stage in model.stages[split:] for p in stage.parameters()] + list(model.head.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)

        def step(inp: torch.Tensor, start: int) -> None:
            with self._autocast():
                loss = F.cross_entropy(model.forward_from(inp, start).float(), y)
            loss.backward()

        tail_step = timed(lambda: step(mid, split))
        full_step = None
        if self.device.type == "cuda":
            for p in model.parameters():
                p.requires_grad_(True)
            full_step = timed(lambda: step(x, 0))
        for p in model.parameters():
            p.grad = None
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.unfreeze_last(k - model.trainable_from)  # restore the frozen set exactly
        model.train(was_training)
        # The head fit (L-BFGS, ~5 λ, ~100 iterations each) costs about 500 feature-row passes.
        head_fit = 500 * 3 * model.num_features * model.num_classes / 2e10
        return Costs(prefix_forward, tail_step, tail_forward, full_step, head_fit)

    # ---- the cache -----------------------------------------------------------------------
    @torch.no_grad()
    def build(self, images: dict[str, Sequence[torch.Tensor]], labels: dict[str, torch.Tensor], *, views: int, split: int | None) -> None:
        """One pass of the frozen network per (part, view): ``prefix`` (when split) and ``features``."""
        t0 = time.perf_counter()
        self.images, self.labels, self.views, self.split = images, labels, views, split
        model = self.model
        model.eval()
        jobs: list[tuple[str, int]] = [("val", 0), ("test", 0)] + [("train", v) for v in range(views)]
        jobs = [(part, v) for part, v in jobs if len(images.get(part, ())) > 0]
        total = sum(len(images[part]) for part, _ in jobs)
        done = 0
        for part, v in jobs:
            n_views = views if part == "train" else 1
            tf = self.eval_tf if v == 0 else self.aug_tf
            ds = TransformedImages(images[part], labels[part].tolist(), tf, seed=self.seed, phase=VIEW_PHASE, view=v)
            pos = 0
            for x, _ in image_batches(ds, batch_size=_CHUNK, num_workers=0):
                x = self._to_device(x)
                with self._autocast():
                    outputs: dict[str, torch.Tensor] = {}
                    if split is not None:
                        mid = model.forward_stages(x, 0, split)
                        outputs["prefix"] = mid
                        outputs["features"] = model.forward_stages(mid, split)
                    else:
                        outputs["features"] = model.forward_stages(x, 0)
                for kind, out in outputs.items():
                    key = (part, kind)
                    if key not in self.store:
                        self.store[key] = torch.empty((n_views, len(ds), *out.shape[1:]), dtype=torch.float32)
                    self.store[key][v, pos : pos + len(x)] = out.float().cpu()
                pos += len(x)
                done += len(x)
                self.progress("features", done, total)
        self.seconds += time.perf_counter() - t0

    def has(self, part: str, kind: str) -> bool:
        return (part, kind) in self.store

    def tensor(self, part: str, kind: str) -> torch.Tensor:
        """The evaluation view of every photo of ``part``."""
        return self.store[(part, kind)][0]

    def all_views(self, part: str, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every cached view, flattened, with the labels repeated to match."""
        t = self.store[(part, kind)]
        return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:]), self.labels[part].repeat(t.shape[0])

    # ---- batches -------------------------------------------------------------------------
    def batches(self, part: str, kind: str, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]] | Any:
        """Evaluation batches of ``part``: cached tensors, or images when ``kind`` is "images"."""
        if kind == "images":
            ds = TransformedImages(self.images[part], self.labels[part].tolist(), self.eval_tf)
            return image_batches(ds, batch_size=batch_size, pin_memory=self.device.type == "cuda")
        return cached_batches(self.store[(part, kind)], self.labels[part], batch_size=batch_size)

    def train_batches(self, kind: str, *, batch_size: int, order: torch.Tensor, phase: int, epoch: int, num_workers: int = -1) -> Any:
        """Training batches in ``order``: one cached view per photo, or freshly augmented images."""
        if kind == "images":
            ds = TransformedImages(self.images["train"], self.labels["train"].tolist(), self.aug_tf, seed=self.seed,
                                   phase=phase, epoch=epoch)
            cuda = self.device.type == "cuda"
            return image_batches(ds, batch_size=batch_size, order=order, pin_memory=cuda,
                                 num_workers=resolve_workers(num_workers) if cuda else 0)
        views = self.store[("train", kind)].shape[0]
        choice = None
        if views > 1:
            g = torch.Generator().manual_seed(sample_seed(self.seed, phase, epoch, -3 & 0xFFFFFFFF))
            choice = torch.randint(0, views, (len(self.labels["train"]),), generator=g)
        return cached_batches(self.store[("train", kind)], self.labels["train"], batch_size=batch_size, order=order,
                              view_choice=choice)
