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


# Optional extension: a reporter may also define
#     on_progress(self, *, what: str, done: int, total: int) -> None
# which training calls while it decodes images ("decode") and caches features ("features");
# ``should_stop()`` is checked after each of those chunks too. Reporters without it work as is.


class ConsoleReporter:
    """Progress bars (tqdm, on stderr) and one summary line per epoch (stdout) for the CLI."""

    def __init__(self, *, bars: bool = True, stream: Any = None) -> None:
        import sys

        self.bars = bars
        self.stream = stream or sys.stdout
        self._bar: Any = None
        self._bar_key: tuple[str, int] | None = None
        self._phase_epochs: dict[str, int] = {}

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._bar_key = None

    def _open(self, key: tuple[str, int], total: int, desc: str) -> None:
        if not self.bars:
            return
        if self._bar_key != key:
            from tqdm import tqdm

            self._close()
            self._bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, unit="batch")
            self._bar_key = key

    def on_progress(self, *, what: str, done: int, total: int) -> None:
        self._open((what, 0), total, what)
        if self._bar is not None:
            self._bar.unit = "img"
            self._bar.n = done
            self._bar.refresh()
            if done >= total:
                self._close()

    def on_phase_start(self, *, phase: str, epochs: int, batches_per_epoch: int) -> None:
        self._close()
        self._phase_epochs[phase] = epochs
        print(f"phase {phase}: {epochs} epoch(s), {batches_per_epoch} batches each", file=self.stream, flush=True)

    def on_batch(self, *, phase: str, epoch: int, batch: int, batches: int, loss: float) -> None:
        self._open((phase, epoch), batches, f"{phase} {epoch}/{self._phase_epochs.get(phase, '?')}")
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def on_epoch_end(self, *, phase: str, epoch: int, metrics: dict[str, Any]) -> None:
        self._close()
        m = metrics
        print(
            f"{phase:8s} epoch {epoch:2d}/{self._phase_epochs.get(phase, '?')}  "
            f"train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f}  "
            f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} top5 {m.get('val_top5', float('nan')):.3f}  "
            f"lr {m['lr']:.2e}  {m['seconds']:.1f}s",
            file=self.stream,
            flush=True,
        )

    def should_stop(self) -> bool:
        return False
