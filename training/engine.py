"""One epoch of training and one evaluation pass, returning plain metric dicts.

Both take any iterable of ``(inputs, labels)`` batches: images, or cached outputs of the frozen
stages (``start_stage`` says where in the model the inputs enter).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from training.errors import Cancelled, NonFiniteLoss
from training.model import TransferModel


def lr_factor(schedule: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based) of ``total_steps``.

    ``warmup_steps`` > 0 ramps the factor linearly from 1/warmup_steps to the schedule's value
    over the first steps (constant and cosine; one-cycle has its own warm-up).
    """
    total = max(1, total_steps)
    if warmup_steps > 0 and step < warmup_steps and schedule != "onecycle":
        return (step + 1) / warmup_steps * lr_factor(schedule, step, total_steps)
    progress = min(step, total) / total
    # 1) constant: the base learning rate throughout
    if schedule == "constant":
        return 1.0
    # 2) cosine: from the base learning rate down to ~0 at the end of the phase
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    # 3) one-cycle: 30% warm-up from base/25 to base, then cosine down to base/1e4
    if schedule == "onecycle":
        warm = 0.3
        if progress < warm:
            t = progress / warm
            return 1 / 25 + (1 - 1 / 25) * 0.5 * (1 - math.cos(math.pi * t))
        t = (progress - warm) / (1 - warm)
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}")


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to base_lr * factor; returns the head group's lr (the last group)."""
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"]) * factor
    return float(optimizer.param_groups[-1]["lr"])


def _autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if x.ndim == 4:  # channels_last: faster convolutions on CUDA and on CPU
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, beta: torch.distributions.Beta, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Mixup (Zhang et al. 2018): the batch blended with a shuffled copy of itself.

    Returns the mixed inputs, the shuffled copy's labels and the weight ``lam`` of the original,
    drawn from ``beta``; on the cached outputs of the frozen prefix this is manifold mixup
    (Verma et al. 2019). ``generator`` draws the shuffle (torch's global one when None).
    """
    lam = float(beta.sample())
    perm = torch.randperm(len(y), generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], y[perm], lam


def mixed_loss(
    logits: torch.Tensor, y: torch.Tensor, y_other: torch.Tensor, lam: float, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy against both labels of a mixed batch, weighted as the inputs were."""
    return lam * F.cross_entropy(logits, y, label_smoothing=label_smoothing) + (1 - lam) * F.cross_entropy(
        logits, y_other, label_smoothing=label_smoothing
    )


def train_one_epoch(
    model: TransferModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    start_stage: int = 0,
    device: torch.device | str = "cpu",
    label_smoothing: float = 0.0,
    schedule: str = "constant",
    warmup_steps: int = 0,
    step: int = 0,
    total_steps: int = 1,
    on_batch: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    mixed_precision: bool = True,
    mixup: float = 0.0,
) -> dict[str, Any]:
    """Train on every batch once. Returns loss, acc, n, steps, lr, seconds.

    ``mixup`` > 0: each batch goes through ``mix_batch`` with a weight drawn from
    Beta(mixup, mixup), from torch's global generator, which the caller seeds per epoch.
    Accuracy counts the larger part's label.

    Raises NonFiniteLoss when a loss is NaN/inf and Cancelled when ``should_stop()`` is True
    after a batch.
    """
    device = torch.device(device)
    model.train()
    started = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64)
    correct = 0
    n = 0
    lr = float(optimizer.param_groups[-1]["lr"])
    batch_no = 0
    beta = torch.distributions.Beta(mixup, mixup) if mixup > 0 else None
    for x, y in batches:
        lr = set_lr(optimizer, lr_factor(schedule, step, total_steps, warmup_steps))
        x, y = _to_device(x, device), y.to(device, non_blocking=True)
        if beta is not None:
            x, y_other, lam = mix_batch(x, y, beta)
        with _autocast(device, mixed_precision):
            logits = model.forward_from(x, start_stage)
        if beta is None:
            loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
        else:
            loss = mixed_loss(logits.float(), y, y_other, lam, label_smoothing)
            y = y if lam >= 0.5 else y_other
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            raise NonFiniteLoss(
                f"The training loss became {loss_value} at step {step + 1}; lower the learning rate (now {lr:g})."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        batch_no += 1
        bs = int(y.shape[0])
        loss_sum += loss_value * bs
        correct += int((logits.detach().argmax(1) == y).sum())
        n += bs
        if on_batch is not None:
            on_batch(batch_no, loss_value)
        if should_stop is not None and should_stop():
            raise Cancelled("The run was cancelled.")
    return {
        "loss": float(loss_sum) / max(n, 1),
        "acc": correct / max(n, 1),
        "n": n,
        "steps": batch_no,
        "lr": lr,
        "seconds": time.perf_counter() - started,
    }


def evaluate(
    model: TransferModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    start_stage: int = 0,
    device: torch.device | str = "cpu",
    return_outputs: bool = False,
    mixed_precision: bool = True,
) -> dict[str, Any]:
    """Loss (plain cross-entropy), top-1, top-5 and n; with ``return_outputs`` also the
    probabilities and targets (CPU tensors)."""
    device = torch.device(device)
    model.eval()
    started = time.perf_counter()
    loss_sum = 0.0
    correct1 = correct5 = n = 0
    probs_all: list[torch.Tensor] = []
    targets_all: list[torch.Tensor] = []
    with torch.inference_mode():
        for x, y in batches:
            x, y = _to_device(x, device), y.to(device, non_blocking=True)
            with _autocast(device, mixed_precision):
                logits = model.forward_from(x, start_stage)
            logits = logits.float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            correct1 += int((topk[:, 0] == y).sum())
            correct5 += int((topk == y[:, None]).any(dim=1).sum())
            n += int(y.shape[0])
            if return_outputs:
                probs_all.append(torch.softmax(logits, dim=1).cpu())
                targets_all.append(y.cpu())
    out: dict[str, Any] = {
        "loss": loss_sum / max(n, 1),
        "acc": correct1 / max(n, 1),
        "top5": correct5 / max(n, 1),
        "n": n,
        "seconds": time.perf_counter() - started,
    }
    if return_outputs:
        out["probs"] = torch.cat(probs_all) if probs_all else torch.zeros(0, model.num_classes)
        out["targets"] = torch.cat(targets_all) if targets_all else torch.zeros(0, dtype=torch.long)
    return out


def classification_report(probs: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict[str, Any]:
    """Confusion matrix (rows = true, columns = predicted), per-class precision/recall/f1/support."""
    k = len(class_names)
    preds = probs.argmax(1) if probs.numel() else torch.zeros(0, dtype=torch.long)
    cm = torch.zeros(k, k, dtype=torch.long)
    if targets.numel():
        cm.index_put_((targets, preds), torch.ones_like(targets), accumulate=True)
    per_class: dict[str, dict[str, float | int]] = {}
    for i, name in enumerate(class_names):
        tp = int(cm[i, i])
        predicted = int(cm[:, i].sum())
        support = int(cm[i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    top5 = 0.0
    if targets.numel():
        kk = min(5, k)
        top5 = float((probs.topk(kk, dim=1).indices == targets[:, None]).any(dim=1).float().mean())
    return {
        "top1": float((preds == targets).float().mean()) if targets.numel() else 0.0,
        "top5": top5,
        "n": int(targets.numel()),
        "confusion_matrix": cm.tolist(),
        "per_class": per_class,
    }
