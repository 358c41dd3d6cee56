"""The one optimizer table: every choice's title, class, default and recipe learning rates, other
hyperparameters and formula, and ``build_optimizer`` that constructs one by name with checked values.

Imports: torch, training.optim.rules, training.errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch

from training.errors import ConfigError
from training.optim.rules import SGD, AdaGrad, Adam, Momentum, Params, RMSProp, check_fraction, check_non_negative


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer choice: what the UI shows and how ``build_optimizer`` constructs it.

    ``defaults`` holds every hyperparameter other than ``lr`` and ``weight_decay`` with its
    default; these are exactly the keys ``build_optimizer`` accepts as overrides. It is made
    read-only so the shared table cannot be changed by accident.
    """

    name: str
    title: str
    cls: type[torch.optim.Optimizer]
    default_lr: float
    defaults: Mapping[str, Any]
    formula: str
    # The recipe's rates for this optimizer (head epochs, fine-tune), tuned on flowers-12's
    # validation split by bench/optimizers.py; None: scaled from the default optimizer's.
    recipe_lrs: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))


# Default learning rates are starting points for training a classifier head with batches of
# about 32 (recipe_lrs: the (head, fine-tune) rates bench/optimizers.py chose on flowers-12's
# validation split, 2026-11-30): plain SGD takes bigger steps than momentum, whose velocity multiplies the
# effective step by about 1/(1−α) = 10; the adaptive methods use their usual defaults.
OPTIMIZERS: dict[str, OptimizerSpec] = {
    spec.name: spec
    for spec in (
        OptimizerSpec(
            name="sgd",
            title="SGD",
            cls=SGD,
            default_lr=0.1,
            defaults={},
            formula="θ ← θ − εg",
            recipe_lrs=(0.3, 0.03),
        ),
        OptimizerSpec(
            name="momentum",
            title="SGD with momentum",
            cls=Momentum,
            default_lr=0.01,
            defaults={"alpha": 0.9},
            formula="v ← αv − εg;  θ ← θ + v",
            recipe_lrs=(0.03, 0.009),
        ),
        OptimizerSpec(
            name="adagrad",
            title="AdaGrad",
            cls=AdaGrad,
            default_lr=0.01,
            defaults={"delta": 1e-7},
            formula="r ← r + g⊙g;  θ ← θ − ε g / (δ + √r)",
            recipe_lrs=(0.03, 0.003),
        ),
        OptimizerSpec(
            name="rmsprop",
            title="RMSProp",
            cls=RMSProp,
            default_lr=1e-3,
            defaults={"rho": 0.9, "delta": 1e-6},
            formula="r ← ρr + (1−ρ) g⊙g;  θ ← θ − ε g / √(δ + r)",
            recipe_lrs=(0.003, 0.0009),
        ),
        OptimizerSpec(
            name="adam",
            title="Adam",
            cls=Adam,
            default_lr=1e-3,
            defaults={"rho1": 0.9, "rho2": 0.999, "delta": 1e-8},
            formula="s ← ρ1 s + (1−ρ1) g;  r ← ρ2 r + (1−ρ2) g⊙g;  θ ← θ − ε ŝ / √(δ + r̂)",
            recipe_lrs=(0.003, 0.0009),
        ),
        OptimizerSpec(
            name="adamw",
            title="AdamW (decoupled weight decay)",
            cls=torch.optim.AdamW,
            default_lr=1e-3,
            defaults={"betas": (0.9, 0.999), "eps": 1e-8},
            formula="θ ← θ − ελθ − ε ŝ / (√r̂ + δ)   (Adam with weight decay outside the gradient)",
        ),
    )
}


def optimizer_names() -> list[str]:
    """The valid optimizer names, in the table's (display) order."""
    return list(OPTIMIZERS)


def build_optimizer(
    name: str,
    params_or_param_groups: Params,
    *,
    lr: float | None = None,
    weight_decay: float = 0.0,
    **overrides: Any,
) -> torch.optim.Optimizer:
    """Build the optimizer called ``name`` from ``OPTIMIZERS``.

    Args:
        name: one of ``optimizer_names()``.
        params_or_param_groups: parameters, or parameter groups (dicts with "params" and optional
            per-group values such as "lr"), as for any torch optimizer.
        lr: learning rate ε; ``None`` uses the table's ``default_lr``.
        weight_decay: λ. The lecture optimizers add it to the gradient (g ← g + λθ); "adamw"
            applies it decoupled (θ ← θ − ελθ), so choose e.g. 0.01 there.
        **overrides: other hyperparameters, only keys of the spec's ``defaults`` (e.g. ``alpha``
            for "momentum", ``rho`` and ``delta`` for "rmsprop").

    Raises:
        ConfigError: unknown name, unknown override key or invalid value.
    """
    spec = OPTIMIZERS.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")

    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        accepted = ", ".join(["lr", "weight_decay", *spec.defaults])
        raise ConfigError(
            f"unknown hyperparameter {', '.join(map(repr, unknown))} for optimizer '{name}'; it accepts: {accepted}"
        )

    owner = spec.cls.__name__
    lr = spec.default_lr if lr is None else lr
    check_non_negative(owner, "lr", lr)
    check_non_negative(owner, "weight_decay", weight_decay)
    hyperparameters = {**spec.defaults, **overrides}
    if "betas" in hyperparameters:  # AdamW's (ρ1, ρ2); torch would fail on a non-pair with a TypeError
        betas = hyperparameters["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"{owner} hyperparameter 'betas' must be a pair (ρ1, ρ2), got {betas!r}.")
        for beta in betas:
            check_fraction(owner, "betas", beta)
    try:
        return spec.cls(params_or_param_groups, lr=lr, weight_decay=weight_decay, **hyperparameters)
    except ConfigError:
        raise
    except ValueError as exc:  # torch's own checks (AdamW betas, eps, ...)
        raise ConfigError(f"invalid settings for optimizer '{name}': {exc}") from exc
