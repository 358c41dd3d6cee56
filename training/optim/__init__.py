"""The lecture's optimizers, written from their textbook formulas (``rules``), and one table to pick
them by name (``table``): ``build_optimizer(name, params, lr=..., weight_decay=..., **overrides)``;
``OPTIMIZERS`` holds the title, class, default learning rate, other defaults and formula of every choice.
"""

from training.optim.rules import SGD, AdaGrad, Adam, Momentum, RMSProp
from training.optim.table import OPTIMIZERS, OptimizerSpec, build_optimizer, optimizer_names

__all__ = [
    "OPTIMIZERS",
    "AdaGrad",
    "Adam",
    "Momentum",
    "OptimizerSpec",
    "RMSProp",
    "SGD",
    "build_optimizer",
    "optimizer_names",
]
