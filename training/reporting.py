"""The seam between training code and whoever watches it.

Training code calls a ``Reporter``; it never knows whether progress goes to a console
(the CLI) or to database rows (the Django worker's ``DbReporter``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Reporter(Protocol):
    def on_phase_start(self, *, phase: str, epochs: int, batches_per_epoch: int) -> None:
        """A phase ("head" or "finetune") begins."""

    def on_batch(self, *, phase: str, epoch: int, batch: int, batches: int, loss: float) -> None:
        """One optimisation step finished (``batch`` counts from 1 to ``batches``)."""

    def on_epoch_end(self, *, phase: str, epoch: int, metrics: dict[str, Any]) -> None:
        """An epoch finished. ``metrics`` holds train_loss, train_acc, val_loss, val_acc, lr, seconds."""

    def should_stop(self) -> bool:
        """Return True to cancel cooperatively; checked after every batch."""


class NullReporter:
    """A reporter that ignores everything and never stops."""

    def on_phase_start(self, *, phase: str, epochs: int, batches_per_epoch: int) -> None:
        pass

    def on_batch(self, *, phase: str, epoch: int, batch: int, batches: int, loss: float) -> None:
        pass

    def on_epoch_end(self, *, phase: str, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return False
