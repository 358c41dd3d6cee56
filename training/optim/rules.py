"""The lecture's optimizers, written from their textbook formulas, and one table to pick them by name.

The update rules follow Goodfellow, Bengio & Courville, *Deep Learning*, chapter 8, and use the
book's symbols: θ the parameters, g the gradient, ε the learning rate (``lr``), λ the weight
decay, α the momentum, ρ decay rates, δ a small constant for numerical stability.

=========  ==================  ========================================================
name       class               update (Deep Learning, ch. 8)
=========  ==================  ========================================================
sgd        ``SGD``             θ ← θ − εg                                 (Alg. 8.1)
momentum   ``Momentum``        v ← αv − εg;  θ ← θ + v                    (Alg. 8.2)
adagrad    ``AdaGrad``         r ← r + g⊙g;  θ ← θ − ε/(δ + √r) ⊙ g       (Alg. 8.4)
rmsprop    ``RMSProp``         r ← ρr + (1−ρ)g⊙g;  θ ← θ − ε/√(δ + r) ⊙ g  (Alg. 8.5)
adam       ``Adam``            s, r moment estimates;  θ ← θ − ε ŝ/√(δ + r̂)  (Alg. 8.7)
adamw      torch.optim.AdamW   Adam with decoupled weight decay (Loshchilov & Hutter)
=========  ==================  ========================================================

Weight decay in the five lecture optimizers is the classic L2 penalty added to the gradient
before the update, g ← g + λθ, which is the same as adding (λ/2)‖θ‖² to the loss. AdamW instead
shrinks the parameters directly, θ ← θ − ελθ, outside the adaptive scaling.

Differences from ``torch.optim`` worth knowing: ``Momentum`` stores the book's velocity
v = −ε·(torch's momentum buffer), which gives the same parameters while ε is constant;
``RMSProp`` and ``Adam`` put δ *inside* the square root as the book does, where torch adds
its ``eps`` outside (√r + eps).

The table that picks them by name (``OPTIMIZERS``, ``build_optimizer``) is ``training.optim.table``;
import both from ``training.optim``. Imports: torch, training.errors.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from training.errors import ConfigError

__all__ = ["SGD", "AdaGrad", "Adam", "Momentum", "RMSProp"]

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


# --------------------------------------------------------------------------------------------
# Hyperparameter checks
# --------------------------------------------------------------------------------------------


def check_number(owner: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{owner} hyperparameter '{key}' must be a finite number, got {value!r}.")
    return float(value)


def check_non_negative(owner: str, key: str, value: Any) -> None:
    if check_number(owner, key, value) < 0:
        raise ConfigError(f"{owner} hyperparameter '{key}' must be >= 0, got {value!r}.")


def check_fraction(owner: str, key: str, value: Any) -> None:
    if not 0 <= check_number(owner, key, value) < 1:
        raise ConfigError(f"{owner} hyperparameter '{key}' must lie in [0, 1), got {value!r}.")


# --------------------------------------------------------------------------------------------
# The lecture's optimizers
# --------------------------------------------------------------------------------------------


class _TextbookOptimizer(torch.optim.Optimizer):
    """Shared loop of the lecture's optimizers; subclasses implement one parameter's update.

    ``step`` visits every parameter with a gradient, applies weight decay (g ← g + λθ) to a copy
    of the gradient (``param.grad`` itself is never modified) and calls ``_update``.
    Hyperparameters are checked for every parameter group, including groups added later.
    """

    # Group keys that must lie in [0, 1) and keys that must be >= 0 ("lr" and
    # "weight_decay" are always checked to be >= 0).
    _FRACTIONS: tuple[str, ...] = ()
    _NON_NEGATIVE: tuple[str, ...] = ()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self._check_hyperparameters({**self.defaults, **param_group})
        super().add_param_group(param_group)

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        owner = type(self).__name__
        for key in ("lr", "weight_decay", *self._NON_NEGATIVE):
            check_non_negative(owner, key, group[key])
        for key in self._FRACTIONS:
            check_fraction(owner, key, group[key])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """Perform one update of every parameter that has a gradient.

        ``closure``, if given, re-evaluates the model and returns the loss (as in torch.optim);
        it runs with gradients enabled before the update and its loss is returned.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue  # frozen or unused parameter: no update, no state
                if param.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients.")
                grad = param.grad
                if group["weight_decay"] != 0:
                    grad = grad.add(param, alpha=group["weight_decay"])  # (0) g ← g + λθ
                self._update(param, grad, self.state[param], group)
        return loss

    def _update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """Update ``param`` in place from ``grad`` (weight decay already added)."""
        raise NotImplementedError


class SGD(_TextbookOptimizer):
    """Stochastic gradient descent (Deep Learning, Algorithm 8.1).

    (1) θ ← θ − εg

    Args:
        params: parameters or parameter groups (dicts with "params" and any of these keys).
        lr: learning rate ε.
        weight_decay: L2 coefficient λ, added to the gradient: g ← g + λθ.
    """

    def __init__(self, params: Params, lr: float, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    def _update(self, param, grad, state, group):
        param.add_(grad, alpha=-group["lr"])  # (1) θ ← θ − εg


class Momentum(_TextbookOptimizer):
    """SGD with momentum (Deep Learning, Algorithm 8.2).

    (1) v ← αv − εg        velocity, starts at 0; stored as ``state["v"]``
    (2) θ ← θ + v

    torch.optim.SGD(momentum=α) keeps b ← αb + g and steps θ ← θ − εb instead; with a constant
    ε this is the same trajectory (v = −εb).

    Args:
        params: parameters or parameter groups.
        lr: learning rate ε.
        alpha: momentum α in [0, 1).
        weight_decay: L2 coefficient λ, added to the gradient: g ← g + λθ.
    """

    _FRACTIONS = ("alpha",)

    def __init__(self, params: Params, lr: float, alpha: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "weight_decay": weight_decay})

    def _update(self, param, grad, state, group):
        if not state:
            state["v"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        v = state["v"]
        v.mul_(group["alpha"]).add_(grad, alpha=-group["lr"])  # (1) v ← αv − εg
        param.add_(v)  # (2) θ ← θ + v


class AdaGrad(_TextbookOptimizer):
    """AdaGrad (Deep Learning, Algorithm 8.4).

    (1) r ← r + g⊙g                   sum of squared gradients, starts at 0; ``state["r"]``
    (2) Δθ = −ε/(δ + √r) ⊙ g
    (3) θ ← θ + Δθ

    Same as torch.optim.Adagrad(eps=δ, initial_accumulator_value=0, lr_decay=0).

    Args:
        params: parameters or parameter groups.
        lr: learning rate ε.
        delta: small constant δ >= 0 added to √r.
        weight_decay: L2 coefficient λ, added to the gradient: g ← g + λθ.
    """

    _NON_NEGATIVE = ("delta",)

    def __init__(self, params: Params, lr: float, delta: float = 1e-7, weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "delta": delta, "weight_decay": weight_decay})

    def _update(self, param, grad, state, group):
        if not state:
            state["r"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        r = state["r"]
        r.addcmul_(grad, grad)  # (1) r ← r + g⊙g
        denominator = r.sqrt().add_(group["delta"])  # (2) δ + √r
        param.addcdiv_(grad, denominator, value=-group["lr"])  # (2, 3) θ ← θ − ε g/(δ + √r)


class RMSProp(_TextbookOptimizer):
    """RMSProp (Deep Learning, Algorithm 8.5).

    (1) r ← ρr + (1−ρ) g⊙g            moving average of squared gradients, starts at 0; ``state["r"]``
    (2) Δθ = −ε/√(δ + r) ⊙ g          δ inside the square root (torch.optim.RMSprop: √r + eps)
    (3) θ ← θ + Δθ

    Args:
        params: parameters or parameter groups.
        lr: learning rate ε.
        rho: decay rate ρ in [0, 1).
        delta: small constant δ >= 0 added to r under the square root.
        weight_decay: L2 coefficient λ, added to the gradient: g ← g + λθ.
    """

    _FRACTIONS = ("rho",)
    _NON_NEGATIVE = ("delta",)

    def __init__(
        self, params: Params, lr: float, rho: float = 0.9, delta: float = 1e-6, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "delta": delta, "weight_decay": weight_decay})

    def _update(self, param, grad, state, group):
        if not state:
            state["r"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        r = state["r"]
        rho = group["rho"]
        r.mul_(rho).addcmul_(grad, grad, value=1 - rho)  # (1) r ← ρr + (1−ρ) g⊙g
        denominator = r.add(group["delta"]).sqrt_()  # (2) √(δ + r)
        param.addcdiv_(grad, denominator, value=-group["lr"])  # (2, 3) θ ← θ − ε g/√(δ + r)


class Adam(_TextbookOptimizer):
    """Adam (Deep Learning, Algorithm 8.7).

    (1) t ← t + 1                     step count; ``state["t"]`` (a Python int)
    (2) s ← ρ1 s + (1−ρ1) g           first moment, starts at 0; ``state["s"]``
    (3) r ← ρ2 r + (1−ρ2) g⊙g         second moment, starts at 0; ``state["r"]``
    (4) ŝ = s/(1−ρ1^t),  r̂ = r/(1−ρ2^t)    bias correction
    (5) Δθ = −ε ŝ/√(δ + r̂)            δ inside the square root as in the book
    (6) θ ← θ + Δθ

    torch.optim.Adam adds its eps outside the square root (√r̂ + eps); with δ = eps = 0 the
    two are the same.

    Args:
        params: parameters or parameter groups.
        lr: step size ε.
        rho1, rho2: decay rates ρ1, ρ2 in [0, 1) of the moment estimates.
        delta: small constant δ >= 0 added to r̂ under the square root.
        weight_decay: L2 coefficient λ, added to the gradient: g ← g + λθ (use AdamW for
            decoupled weight decay).
    """

    _FRACTIONS = ("rho1", "rho2")
    _NON_NEGATIVE = ("delta",)

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        rho1: float = 0.9,
        rho2: float = 0.999,
        delta: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "rho1": rho1, "rho2": rho2, "delta": delta, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    def _update(self, param, grad, state, group):
        if not state:
            state["t"] = 0
            state["s"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["r"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        s, r = state["s"], state["r"]
        rho1, rho2 = group["rho1"], group["rho2"]

        state["t"] += 1  # (1) t ← t + 1
        t = state["t"]
        s.mul_(rho1).add_(grad, alpha=1 - rho1)  # (2) s ← ρ1 s + (1−ρ1) g
        r.mul_(rho2).addcmul_(grad, grad, value=1 - rho2)  # (3) r ← ρ2 r + (1−ρ2) g⊙g
        s_hat = s.div(1 - rho1**t)  # (4) ŝ = s/(1−ρ1^t)
        r_hat = r.div(1 - rho2**t)  # (4) r̂ = r/(1−ρ2^t)
        denominator = r_hat.add_(group["delta"]).sqrt_()  # (5) √(δ + r̂)
        param.addcdiv_(s_hat, denominator, value=-group["lr"])  # (5, 6) θ ← θ − ε ŝ/√(δ + r̂)
