"""The end of a run: which weights are kept, the one look at the test split, the run directory.

1. Kept weights: with early stopping, the best epoch on validation (accuracy, then loss);
   otherwise the last fine-tune epoch, unless its validation accuracy is below the converged
   head's, in which case the head is kept. Either way the choice uses validation only.
2. Test: the kept model and the head alone are scored once on the test split; the difference
   is the fine-tune phase's gain. The last fine-tune epoch is scored too (``finetuned_test_acc``,
   also when the head is kept), so that benchmarks can judge the keep rule. Nothing is chosen on
   these numbers.
3. ``meta.json`` (metrics, plan, kept phase and epoch), ``history.json``, ``validation.json``
   and ``test.json`` (confusion matrix, per-class results, every photo's answer) are written
   atomically, meta last.

Imports torch and training/ only.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training import checkpoint as ckpt
from training.engine import classification_report, evaluate

if TYPE_CHECKING:
    from training.finetune import _Run


@dataclass
class FinetuneResult:
    """What a finished run returns (and ``load_result`` reads back from its directory)."""

    out_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    plan: dict[str, Any] | None = None

    @property
    def best_val_acc(self) -> float:
        return float(self.metrics.get("best_val_acc", 0.0))


def load_result(out_dir: Path) -> FinetuneResult:
    """The result of a finished run directory."""
    out_dir = Path(out_dir)
    meta = ckpt.read_json(out_dir / ckpt.META_FILE)
    history = ckpt.read_json(out_dir / ckpt.HISTORY_FILE)
    return FinetuneResult(
        out_dir, meta["metrics"], history, meta["class_names"], [tuple(s) for s in meta.get("skipped", [])], meta.get("plan")
    )


def _report(run: _Run, part: str, start: int, kind: str) -> dict[str, Any]:
    result = evaluate(run.model, run.store.batches(part, kind, 256), start_stage=start, device=run.device, return_outputs=True)
    report = classification_report(result["probs"], result["targets"], run.classes)
    probs = result["probs"]
    conf, pred = probs.max(1) if probs.numel() else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
    report["predictions"] = [
        {"path": s.relpath, "true": run.classes[s.label], "pred": run.classes[int(p)], "confidence": float(cf),
         "correct": int(p) == s.label}
        for s, p, cf in zip(run.samples[part], pred, conf)
    ]
    report["classes"] = run.classes
    report["loss"] = result["loss"]
    return report


def _stage(run: _Run) -> tuple[int, str]:
    """Where evaluation inputs enter the model now: cached prefix, cached features or images."""
    if run.split is not None and run.store.has("val", "prefix"):
        return run.split, "prefix"
    ran_finetune = any(h["phase"] == "finetune" for h in run.history)
    if not ran_finetune and run.store.has("val", "features"):
        return run.model.num_stages, "features"
    return 0, "images"


def kept_weights(run: _Run) -> dict[str, Any]:
    """Load the weights the run keeps into ``run.model``; return which ones (phase, epoch, why)."""
    c = run.config
    heads = [h for h in run.history if h["phase"] == "head"]
    tunes = [h for h in run.history if h["phase"] == "finetune"]
    if c.early_stopping_patience > 0:
        best = ckpt.load_best(run.out_dir)
        if best is not None and run.best_epoch is not None:
            run.model.load_state_dict(best)
            return {**run.best_epoch, "why": "best validation epoch (early stopping)"}
    if tunes and heads and tunes[-1]["val_acc"] < heads[-1]["val_acc"]:
        head_state = ckpt.load_named(run.out_dir, "head")
        if head_state is not None:
            run.model.load_state_dict(head_state)
            h = heads[-1]
            return {"phase": "head", "epoch": h["epoch"], "val_loss": h["val_loss"], "val_acc": h["val_acc"],
                    "why": "fine-tuning lowered validation accuracy, so the converged head is kept"}
    last = run.history[-1]
    return {"phase": last["phase"], "epoch": last["epoch"], "val_loss": last["val_loss"], "val_acc": last["val_acc"],
            "why": "last epoch of the plan"}


def finish_run(run: _Run) -> FinetuneResult:
    c = run.config
    t0 = time.perf_counter()
    # 1) head-only test score, before the kept weights replace the head-phase weights
    head_test: dict[str, Any] | None = None
    has_test = bool(run.samples.get("test"))
    head_state = ckpt.load_named(run.out_dir, "head")
    ran_finetune = any(h["phase"] == "finetune" for h in run.history)
    tuned_test: dict[str, Any] | None = None  # the last fine-tune epoch, kept or not (for the record)
    if has_test and head_state is not None and ran_finetune:
        start, kind = _stage(run)
        tuned_test = evaluate(run.model, run.store.batches("test", kind, 256), start_stage=start, device=run.device)
        current = {k: v.clone() for k, v in run.model.state_dict().items()}
        run.model.load_state_dict(head_state)
        head_test = evaluate(run.model, run.store.batches("test", kind, 256), start_stage=start, device=run.device)
        run.model.load_state_dict(current)
    # 2) the kept weights, validation and test reports
    kept = kept_weights(run)
    start, kind = _stage(run)
    validation = _report(run, "val", start, kind)
    validation["root"] = str(run.val_root)
    test = _report(run, "test", start, kind) if has_test else None
    if head_test is None and test is not None and kept["phase"] == "head":
        head_test = {"acc": test["top1"], "loss": test["loss"]}
    run.timings["test_s"] = time.perf_counter() - t0
    heads = [h for h in run.history if h["phase"] == "head"]
    head_val = heads[-1]["val_acc"] if heads else None

    elapsed = time.perf_counter() - run.started
    metrics: dict[str, Any] = {
        "val_acc": validation["top1"],
        "val_top5": validation["top5"],
        "val_loss": validation["loss"],
        "best_val_acc": max([h["val_acc"] for h in run.history] + [validation["top1"]]),
        "best_epoch": run.best_epoch,
        "kept": kept,
        "restored_best": kept["why"] != "last epoch of the plan",
        "head_val_acc": head_val,
        "finetune_gain_val": (validation["top1"] - head_val) if head_val is not None and ran_finetune else None,
        "backbone": run.backbone.name,
        "image_size": run.pre["image_size"],
        "epochs": len(run.history),
        "train_images": len(run.samples["train"]),
        "val_images": len(run.samples["val"]),
        "test_images": len(run.samples.get("test", [])),
        "seconds": elapsed,
        **{k: (round(v, 3) if k.endswith("_s") else v) for k, v in run.timings.items()},
    }
    if test is not None:
        metrics.update({
            "test_acc": test["top1"],
            "test_top5": test["top5"],
            "test_loss": test["loss"],
            "head_test_acc": head_test["acc"] if head_test else None,
            "finetune_gain_test": (test["top1"] - head_test["acc"]) if head_test and ran_finetune else None,
            "finetuned_test_acc": tuned_test["acc"] if tuned_test else None,
        })
    meta = {
        "format": ckpt.FORMAT_VERSION,
        "backbone": run.backbone.name,
        "backbone_title": run.backbone.title_at(run.pre["image_size"]),
        "num_classes": len(run.classes),
        "class_names": run.classes,
        "architecture": {"num_features": run.model.num_features, "dropout": c.head_dropout},
        "preprocessing": run.pre,
        "config": c.to_dict(),
        "plan": run.plan.to_dict() if run.plan else None,
        "head_fit": run.head_fit,
        "backbone_choice": run.backbone_choice,
        "metrics": metrics,
        "head_init": {
            "from_pretrained": c.init_head_from_pretrained,
            "matched_classes": [run.classes[i] for i in sorted(run.head_matches)],
        },
        "skipped": [list(s) for s in run.skipped],
        "device": str(run.device),
        "versions": ckpt.library_versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    state = dict(run.model.state_dict())
    ckpt.save_run(run.out_dir, model_state=state, meta=meta, history=run.history, validation=validation, test=test)
    ckpt.remove_training_checkpoint(run.out_dir)
    return FinetuneResult(run.out_dir, metrics, run.history, run.classes, run.skipped, meta["plan"])
