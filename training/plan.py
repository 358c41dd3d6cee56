"""The phase plan: what a run will do and how long each stage should take, fitted to a time budget.

A run times its first batches (``measure_costs``), then ``make_plan`` chooses, within the budget:

1. the path: ``cached`` (the frozen prefix runs once per cached view, the last stages are
   fine-tuned on those cached tensors: the CPU path) or ``images`` (every stage unfrozen, images
   through the DataLoader each epoch: what a GPU picks when the budget allows it);
2. how many augmented views of each training image to cache (more views = more augmentation
   the fine-tune phase sees, at one frozen-prefix forward each);
3. the fine-tune epochs that fit the rest of the budget.

Before all of that, a run with ``backbone="auto"`` picks its network (``choose_backbone``): the
strongest candidate whose one pass over every photo fits a share of the budget, each candidate
timed on a batch here.

Explicit settings win: a config with ``finetune_epochs``/``feature_views`` set follows them and
the plan only estimates. ``estimates`` are seconds per stage; the run page turns them into an ETA.

Imports nothing outside training/ and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_VIEWS = 8
MIN_FINETUNE_EPOCHS = 3
TARGET_FINETUNE_EPOCHS = 10
MAX_FINETUNE_EPOCHS = 30
DEFAULT_VIEWS = 4  # without a budget
DEFAULT_FINETUNE_EPOCHS = 8  # without a budget


@dataclass(frozen=True)
class Costs:
    """Measured seconds per image on this device."""

    prefix_forward: float  # frozen stages, evaluation mode
    tail_step: float  # trainable stages + head, forward + backward, from cached prefix outputs
    tail_forward: float  # trainable stages + head, forward only
    full_step: float | None = None  # every stage, forward + backward, from images (None: not measured)
    head_fit: float = 0.0  # full-batch head fit, per cached feature row


# ``backbone="auto"``: one pass of every photo through the chosen network may take this share of
# what is left of the budget (the rest: decoding, more views, the head, fine-tuning, the test).
BACKBONE_SHARE = 0.5


@dataclass(frozen=True)
class BackboneOption:
    """A candidate network at its input size and its measured cost here."""

    name: str
    image_size: int
    forward_s: float  # seconds per photo, the whole frozen network, evaluation mode


def choose_backbone(
    candidates: list[tuple[str, int]],
    *,
    time_forward: Callable[[str, int], float],
    budget_s: float | None,
    spent_s: float,
    n_photos: int,
    classes_known: bool = False,
) -> tuple[BackboneOption, list[BackboneOption], str]:
    """The strongest candidate (``candidates``: (name, size), weakest first) whose one pass over
    ``n_photos`` fits ``BACKBONE_SHARE`` of what is left of the budget; without a budget the
    strongest; the weakest when none fits. ``classes_known`` (the pretrained classifier knows every
    class, so its rows are the head's prior) only changes the reason.

    ``time_forward(name, size)`` measures seconds per photo; candidates are timed strongest
    first and only until one fits. Returns the choice, every option timed, and the reason.
    """
    if not candidates:
        raise ValueError("choose_backbone needs at least one candidate.")
    known = " (the pretrained classifier knows every class)" if classes_known else ""
    if budget_s is None:
        name, size = candidates[-1]
        return BackboneOption(name, size, 0.0), [], f"no time budget: the strongest candidate{known}"
    room = BACKBONE_SHARE * max(0.0, budget_s - spent_s)
    timed: list[BackboneOption] = []
    for name, size in reversed(candidates):
        option = BackboneOption(name, size, time_forward(name, size))
        timed.append(option)
        need = n_photos * option.forward_s
        if need <= room:
            return option, timed, (f"{name} at {size} px: one pass over {n_photos} photos takes about {need:.0f} s, "
                                   f"within {BACKBONE_SHARE:.0%} of the budget left{known}")
    weakest = timed[-1]
    return weakest, timed, (f"{weakest.name} at {weakest.image_size} px, the cheapest candidate: no candidate's pass "
                            f"over {n_photos} photos fits {BACKBONE_SHARE:.0%} of the budget left")


@dataclass(frozen=True)
class Plan:
    path: str  # "cached" | "images"
    views: int
    finetune_epochs: int
    unfreeze_blocks: int | None  # None = every stage
    budget_s: float | None
    estimates: dict[str, float] = field(default_factory=dict)
    over_budget: bool = False
    reason: str = ""

    @property
    def total_s(self) -> float:
        return float(sum(self.estimates.values()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["estimates"] = {k: round(v, 1) for k, v in self.estimates.items()}
        d["total_s"] = round(self.total_s, 1)
        return d


def _cached_estimates(views: int, epochs: int, *, n_train: int, n_val: int, n_test: int, costs: Costs, spent: float) -> dict[str, float]:
    n_eval = n_val + n_test
    return {
        "decode": spent,
        "features": (n_train * views + n_eval) * (costs.prefix_forward + costs.tail_forward),
        "head": n_train * views * costs.head_fit,
        "finetune": epochs * (n_train * costs.tail_step + n_val * costs.tail_forward),
        "test": n_test * costs.tail_forward * 2,
    }


def _images_estimates(epochs: int, *, n_train: int, n_val: int, n_test: int, costs: Costs, spent: float) -> dict[str, float]:
    fwd = costs.prefix_forward + costs.tail_forward
    assert costs.full_step is not None
    return {
        "decode": spent,
        "features": (n_train + n_val + n_test) * fwd,
        "head": n_train * costs.head_fit,
        "finetune": epochs * (n_train * costs.full_step + n_val * fwd),
        "test": n_test * fwd * 2,
    }


def make_plan(
    *,
    budget_s: float | None,
    spent_s: float,
    n_train: int,
    n_val: int,
    n_test: int,
    costs: Costs,
    augment: bool,
    views: int | None = None,
    finetune_epochs: int | None = None,
    unfreeze_blocks: int | None = 2,
    allow_images_path: bool = False,
    classes_known: bool = False,
) -> Plan:
    """Choose views and epochs to fit ``budget_s`` (None: no budget, the defaults).

    ``views``/``finetune_epochs`` given: used as they are (estimates only). ``allow_images_path``:
    the whole-network path may be picked (on CUDA) when ten epochs of it fit in 80% of what is
    left of the budget. ``classes_known``: the pretrained classifier already knows every class (its
    rows start the head), so the plan is the converged head alone: one view, no fine-tune epochs.
    """
    sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "costs": costs, "spent": spent_s}
    fixed_views = views if views else (1 if not augment or classes_known else None)
    if classes_known and finetune_epochs is None:
        # Measured (bench/train_recipe.py, dogs-20): fine-tuning classes ImageNet already knows
        # lost 1.7 points of test accuracy against the head solved from the pretrained rows.
        finetune_epochs = 0
    # 1) the whole network on images, when it is allowed and fits
    if allow_images_path and costs.full_step is not None and budget_s is not None and finetune_epochs is None:
        left = budget_s - spent_s
        base = _images_estimates(0, **sizes)
        per_epoch = _images_estimates(1, **sizes)["finetune"]
        room = 0.8 * left - sum(base.values())
        if per_epoch > 0 and room >= TARGET_FINETUNE_EPOCHS * per_epoch:
            epochs = min(MAX_FINETUNE_EPOCHS, int(room // per_epoch))
            return Plan("images", 1, epochs, None, budget_s, _images_estimates(epochs, **sizes),
                        reason="every stage fits the budget")
    # 2) cached views of the frozen prefix, the last stages fine-tuned
    if budget_s is None:
        v = fixed_views or DEFAULT_VIEWS
        e = DEFAULT_FINETUNE_EPOCHS if finetune_epochs is None else finetune_epochs
        return Plan("cached", v, e, unfreeze_blocks, None, _cached_estimates(v, e, **sizes), reason="no time budget")
    if fixed_views and finetune_epochs is not None:
        est = _cached_estimates(fixed_views, finetune_epochs, **sizes)
        return Plan("cached", fixed_views, finetune_epochs, unfreeze_blocks, budget_s, est,
                    over_budget=sum(est.values()) > budget_s, reason="views and epochs as configured")
    candidates = [fixed_views] if fixed_views else list(range(MAX_VIEWS, 0, -1))
    want_epochs = finetune_epochs if finetune_epochs is not None else TARGET_FINETUNE_EPOCHS
    least_epochs = want_epochs if finetune_epochs is not None else MIN_FINETUNE_EPOCHS
    # Views first (each is one more augmented copy of every photo for the head and the fine-tune
    # phase), as many as fit with the fewest epochs; then the epochs that the rest allows.
    for v in candidates:
        if sum(_cached_estimates(v, least_epochs, **sizes).values()) <= budget_s:
            e = want_epochs
            if finetune_epochs is None:
                per_epoch = _cached_estimates(v, 1, **sizes)["finetune"]
                room = budget_s - sum(_cached_estimates(v, 0, **sizes).values())
                e = int(max(least_epochs, min(want_epochs, room // per_epoch if per_epoch > 0 else want_epochs)))
            return Plan("cached", v, e, unfreeze_blocks, budget_s, _cached_estimates(v, e, **sizes),
                        reason=f"{v} view(s) and {e} fine-tune epoch(s) fit the budget")
    # The most views do not fit with the target epochs: one view, as many epochs as fit (>= 1).
    v = candidates[-1]
    base = sum(_cached_estimates(v, 0, **sizes).values())
    per_epoch = _cached_estimates(v, 1, **sizes)["finetune"]
    fit = int((budget_s - base) // per_epoch) if per_epoch > 0 else want_epochs
    e = finetune_epochs if finetune_epochs is not None else max(1, min(want_epochs, fit))
    est = _cached_estimates(v, e, **sizes)
    over = sum(est.values()) > budget_s
    reason = (f"the smallest plan takes about {math.ceil(sum(est.values()) / 60)} min, over the budget" if over
              else f"{v} view(s) and {e} fine-tune epoch(s) fit the budget")
    return Plan("cached", v, e, unfreeze_blocks, budget_s, est, over_budget=over, reason=reason)
