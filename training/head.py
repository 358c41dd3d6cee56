"""A converged head: multinomial logistic regression on cached features, fitted to the optimum.

On a frozen backbone the head is a convex problem, so it is solved, not trained for a few
epochs: full-batch L-BFGS (strong Wolfe line search) minimises

    mean cross-entropy(X W^T + b, y; label smoothing ε) + (λ/2) * ||W - W0||^2

where W0 is the prior (the pretrained classifier's rows for classes the network already knows,
zero for the others: "head init" becomes a prior instead of a starting point that training
forgets). The label smoothing is the fine-tune phase's own, so that phase starts at the optimum of
its own objective instead of first undoing an over-confident head. λ is chosen on the validation split from a log-spaced path, strongest first, each fit
warm-started from the previous one; the λ with the lowest validation loss wins (ties: the
stronger one). A few seconds on CPU for thousands of images.

Imports torch only.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

DEFAULT_LAMBDAS = (1.0, 0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)


@dataclass
class HeadFit:
    weight: torch.Tensor
    bias: torch.Tensor
    lam: float
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    val_top5: float
    seconds: float
    path: list[dict[str, Any]] = field(default_factory=list)


def fit_logistic(
    features: torch.Tensor,
    labels: torch.Tensor,
    lam: float,
    *,
    num_classes: int,
    prior: torch.Tensor | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_iter: int = 200,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean CE (label-smoothed) + (lam/2)||W - prior||^2 over (W, b) with full-batch L-BFGS."""
    x = features.float()
    d = x.shape[1]
    prior_w = torch.zeros(num_classes, d) if prior is None else prior.float()
    if init is not None:
        w0, b0 = init
    else:
        w0, b0 = prior_w, torch.zeros(num_classes)
    w = w0.clone().float().requires_grad_(True)
    b = b0.clone().float().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-10,
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w.T + b, labels, label_smoothing=label_smoothing) + 0.5 * lam * (w - prior_w).pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _score(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    logits = x.float() @ w.T + b
    loss = float(F.cross_entropy(logits, y))
    n = max(int(y.shape[0]), 1)
    acc = int((logits.argmax(1) == y).sum()) / n  # the same arithmetic as training.engine.evaluate
    k = min(5, logits.shape[1])
    top5 = int((logits.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()) / n
    return loss, acc, top5


def fit_head(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    num_classes: int,
    prior: torch.Tensor | None = None,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    max_iter: int = 100,
    label_smoothing: float = 0.0,
    should_stop: Any = None,
) -> HeadFit:
    """Fit the head along the λ path and keep the λ with the lowest validation loss.

    ``train_features`` may hold several views of each image (rows repeated with their labels).
    """
    started = time.perf_counter()
    best: HeadFit | None = None
    path: list[dict[str, Any]] = []
    init = None
    for lam in sorted(lambdas, reverse=True):
        t0 = time.perf_counter()
        w, b = fit_logistic(
            train_features, train_labels, lam, num_classes=num_classes, prior=prior, init=init, max_iter=max_iter,
            label_smoothing=label_smoothing,
        )
        init = (w, b)
        tr_loss, tr_acc, _ = _score(w, b, train_features, train_labels)
        v_loss, v_acc, v_top5 = _score(w, b, val_features, val_labels)
        path.append({"lambda": lam, "train_loss": tr_loss, "train_acc": tr_acc, "val_loss": v_loss, "val_acc": v_acc,
                     "seconds": round(time.perf_counter() - t0, 3)})
        if best is None or v_loss < best.val_loss - 1e-9:
            best = HeadFit(w, b, lam, tr_loss, tr_acc, v_loss, v_acc, v_top5, 0.0)
        if should_stop is not None:
            should_stop()
        # The path is U-shaped in λ: stop once validation loss has turned upwards.
        if len(path) >= 2 and path[-1]["val_loss"] > path[-2]["val_loss"]:
            break
    assert best is not None
    best.seconds = time.perf_counter() - started
    best.path = path
    return best
