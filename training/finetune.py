"""Transfer learning as in the lecture: freeze -> train the head -> unfreeze -> fine-tune.

1. Load the pretrained network and replace its classifier with a new head (optionally started
   from the pretrained classifier's rows for classes the network already knows).
2. Freeze the backbone (parameters and BatchNorm statistics) and train the head. The frozen
   backbone's output is computed once per image (per cached view when augmenting), so this
   phase trains a linear layer on cached features.
3. Unfreeze the last N stages (or all) and continue with a lower learning rate for the backbone
   than for the head; the optimizer (and its state) is rebuilt at the switch. When only the last
   stages are unfrozen, the outputs of the frozen part are cached too.

Every epoch ends with validation, a reporter call and an atomic checkpoint; ``resume=True``
continues from the last completed epoch. Given the seed, a CPU run is bitwise reproducible
(every random choice is seeded per phase/epoch/image, independent of worker processes).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training import checkpoint as ckpt
from training.backbones import Backbone, get_backbone, init_head_from_classifier, match_original_classes
from training.config import TrainConfig
from training.data import (
    EvalTransform,
    Sample,
    TransformedImages,
    cached_batches,
    check_classes,
    decode_images,
    epoch_order,
    image_batches,
    num_batches,
    read_split_file,
    resolve_workers,
    sample_seed,
    scan_image_folder,
    stratified_split,
    train_transform,
    warn_skipped,
)
from training.engine import classification_report, evaluate, train_one_epoch
from training.errors import Cancelled, ConfigError, DataError, TrainingError
from training.model import param_groups
from training.reporting import NullReporter, Reporter

PHASES = ("head", "finetune")
_VIEW_PHASE = 7  # seed-stream id for cached augmented views


@dataclass
class FinetuneResult:
    out_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    class_names: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def best_val_acc(self) -> float:
        return float(self.metrics.get("best_val_acc", 0.0))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but no CUDA GPU is available here.")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"Unknown device {name!r}; valid devices are auto, cpu, cuda.")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
@dataclass
class DataSplits:
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    val_root: Path
    skipped: list[tuple[str, str]]


def load_splits(config: TrainConfig) -> DataSplits:
    """Scan the folders and split them (split file, validation folder, or seeded stratified split)."""
    root = Path(config.data_dir)
    classes, samples, skipped = scan_image_folder(root)
    check_classes(classes, samples, root=root)
    if config.val_dir:
        val_root = Path(config.val_dir)
        val_classes, val_samples, val_skipped = scan_image_folder(val_root)
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise DataError(f"The validation folder has classes the training folder lacks: {', '.join(unknown)}.")
        remap = {i: classes.index(c) for i, c in enumerate(val_classes)}
        val = [Sample(s.path, s.relpath, remap[s.label]) for s in val_samples]
        if not val:
            raise DataError(f"The validation folder {val_root} holds no images.")
        skipped += [(f"{val_root.name}/{rel}", why) for rel, why in val_skipped]
        return DataSplits(classes, samples, val, val_root, skipped)
    if config.split_file:
        train_rel, val_rel = read_split_file(config.split_file)
        by_rel = {s.relpath: s for s in samples}
        skipped_rel = {rel for rel, _ in skipped}
        missing = [r for r in train_rel + val_rel if r not in by_rel and r not in skipped_rel]
        if missing:
            raise DataError(
                f"The split file names {len(missing)} image(s) that are not in {root}, e.g. {', '.join(missing[:3])}."
            )
        overlap = set(train_rel) & set(val_rel)
        if overlap:
            raise DataError(f"The split file lists {len(overlap)} image(s) in both train and val, e.g. {sorted(overlap)[0]}.")
        train = [by_rel[r] for r in train_rel if r in by_rel]
        val = [by_rel[r] for r in val_rel if r in by_rel]
        if not val:
            raise DataError("The split file's val list is empty.")
        return DataSplits(classes, train, val, root, skipped)
    train_idx, val_idx = stratified_split([s.label for s in samples], config.val_fraction, config.seed)
    return DataSplits(classes, [samples[i] for i in train_idx], [samples[i] for i in val_idx], root, skipped)


def _check_train_covers_classes(classes: list[str], train: list[Sample]) -> None:
    present = {s.label for s in train}
    absent = [c for i, c in enumerate(classes) if i not in present]
    if absent:
        raise DataError(f"Every class needs at least one training image; none for: {', '.join(absent)}.")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def finetune(
    config: TrainConfig,
    *,
    out_dir: Path,
    reporter: Reporter | None = None,
    resume: bool = False,
) -> FinetuneResult:
    """Fine-tune ``config.backbone`` on ``config.data_dir`` and write the run to ``out_dir``.

    Raises ConfigError/DataError/WeightsUnavailable for bad input, NonFiniteLoss when the loss
    diverges and Cancelled when ``reporter.should_stop()`` returns True (after a checkpoint).
    """
    return _Run(config, Path(out_dir), reporter or NullReporter(), resume).run()


def load_result(out_dir: Path) -> FinetuneResult:
    """The result of a finished run directory."""
    out_dir = Path(out_dir)
    meta = ckpt.read_json(out_dir / ckpt.META_FILE)
    history = ckpt.read_json(out_dir / ckpt.HISTORY_FILE)
    return FinetuneResult(out_dir, meta["metrics"], history, meta["class_names"], [tuple(s) for s in meta.get("skipped", [])])


class _Run:
    def __init__(self, config: TrainConfig, out_dir: Path, reporter: Reporter, resume: bool) -> None:
        from training.optim import OPTIMIZERS

        self.config = config.validate()
        if config.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer {config.optimizer!r}; valid optimizers are {', '.join(OPTIMIZERS)}.")
        self.backbone: Backbone = get_backbone(config.backbone)
        self.device = resolve_device(config.device)
        self.out_dir = out_dir
        self.reporter = reporter
        self.resume = resume
        self.pre = self.backbone.preprocessing(config.image_size)
        self.history: list[dict[str, Any]] = []
        self.best_loss = math.inf
        self.best_epoch: dict[str, Any] | None = None
        self.bad_epochs = 0
        self.step_counter = 0
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    # ---- helpers -------------------------------------------------------------------------
    def _stop_check(self) -> None:
        if self.reporter.should_stop():
            raise Cancelled("The run was cancelled.")

    def _progress(self, what: str, done: int, total: int) -> None:
        hook = getattr(self.reporter, "on_progress", None)
        if hook is not None:
            hook(what=what, done=done, total=total)
        self._stop_check()

    def _phase_plan(self) -> list[tuple[str, int, int | None]]:
        c = self.config
        n = c.unfreeze_blocks
        return [("head", c.head_epochs, 0), ("finetune", c.finetune_epochs, None if n is None or n < 0 else n)]

    def _save_checkpoint(self, phase_index: int, epoch: int, phase_done: bool, optimizer: torch.optim.Optimizer | None) -> None:
        self.step_counter += 1
        ckpt.save_training_checkpoint(
            self.out_dir,
            model_state=self.model.state_dict(),
            optimizer_state=optimizer.state_dict() if optimizer is not None else None,
            progress={
                "step": self.step_counter,
                "phase_index": phase_index,
                "epoch": epoch,
                "phase_done": phase_done,
                "history": self.history,
                "best_loss": None if math.isinf(self.best_loss) else self.best_loss,
                "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
                "config": self._config_fingerprint(),
                "classes": self.classes,
            },
        )

    def _config_fingerprint(self) -> dict[str, Any]:
        d = self.config.to_dict()
        for volatile in ("device", "num_workers"):
            d.pop(volatile)
        return d

    # ---- 1) data and model ---------------------------------------------------------------
    def _prepare(self) -> None:
        c = self.config
        splits = load_splits(c)
        self.classes = splits.classes
        self.val_root = splits.val_root
        torch.manual_seed(c.seed)
        self.model, parts = self.backbone.transfer_model(
            len(self.classes), pretrained=True, weights_path=c.backbone_weights, dropout=c.head_dropout
        )
        self.head_matches: dict[int, int] = {}
        if c.init_head_from_pretrained:
            self.head_matches = match_original_classes(self.backbone, self.classes, Path(c.data_dir))
            init_head_from_classifier(self.model, parts.classifier, self.head_matches)
        self.model.freeze_backbone()
        self.model.to(self.device, memory_format=torch.channels_last)
        self.splits = splits

    def _decode(self) -> None:
        c = self.config
        splits = self.splits
        # Decode every image once (worker processes), dropping files that fail to decode.
        t0 = time.perf_counter()
        samples = splits.train + splits.val
        images, failures = decode_images(
            [s.path for s in samples],
            resize_size=self.pre["resize_size"],
            interpolation=self.pre["interpolation"],
            num_workers=c.num_workers,
            on_progress=lambda done, total: self._progress("decode", done, total),
        )
        skipped = list(splits.skipped) + [(samples[i].relpath, why) for i, why in sorted(failures.items())]
        keep_train = [i for i in range(len(splits.train)) if i not in failures]
        keep_val = [len(splits.train) + i for i in range(len(splits.val)) if len(splits.train) + i not in failures]
        self.train_samples = [samples[i] for i in keep_train]
        self.val_samples = [samples[i] for i in keep_val]
        self.train_images = [images[i] for i in keep_train]
        self.val_images = [images[i] for i in keep_val]
        _check_train_covers_classes(self.classes, self.train_samples)
        if not self.val_samples:
            raise DataError("No validation image could be decoded.")
        self.train_labels = torch.tensor([s.label for s in self.train_samples])
        self.val_labels = torch.tensor([s.label for s in self.val_samples])
        self.skipped = skipped
        warn_skipped(skipped)
        self.timings["decode_s"] = time.perf_counter() - t0

    # ---- 2) caches -----------------------------------------------------------------------
    def _finetune_split(self) -> int | None:
        """Stage index where cached inputs enter in the finetune phase (None = from images)."""
        c = self.config
        n = self._phase_plan()[1][2]
        k = self.model.num_stages
        if not c.cache_features or c.finetune_epochs == 0 or n is None or n >= k or n <= 0:
            return None
        return k - n

    @torch.no_grad()
    def _build_caches(self, need_head: bool, split: int | None) -> None:
        """One pass over the images: outputs of stages[:split] and of all stages (features)."""
        c = self.config
        t0 = time.perf_counter()
        self.model.eval()
        eval_tf = EvalTransform(size=self.pre["image_size"], mean=self.pre["mean"], std=self.pre["std"])
        aug_tf = train_transform(c.augmentation, size=self.pre["image_size"], mean=self.pre["mean"], std=self.pre["std"])
        views = c.views
        jobs: list[tuple[str, int, TransformedImages]] = [("val", 0, TransformedImages(self.val_images, self.val_labels, eval_tf))]
        for v in range(views):
            tf = eval_tf if v == 0 else aug_tf
            jobs.append(("train", v, TransformedImages(self.train_images, self.train_labels, tf, seed=c.seed, phase=_VIEW_PHASE, view=v)))
        total = sum(len(ds) for _, _, ds in jobs)
        done = 0
        store: dict[tuple[str, str], torch.Tensor] = {}
        for part, v, ds in jobs:
            n_views = 1 if part == "val" else views
            pos = 0
            for x, _ in image_batches(ds, batch_size=16, num_workers=0):
                x = x.to(self.device).contiguous(memory_format=torch.channels_last)
                outputs: dict[str, torch.Tensor] = {}
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                    if split is not None:
                        mid = self.model.forward_stages(x, 0, split)
                        outputs["prefix"] = mid
                        if need_head:
                            outputs["features"] = self.model.forward_stages(mid, split)
                    else:
                        outputs["features"] = self.model.forward_stages(x, 0)
                for kind, out in outputs.items():
                    key = (part, kind)
                    if key not in store:
                        store[key] = torch.empty((n_views, len(ds), *out.shape[1:]), dtype=torch.float32)
                    store[key][v, pos : pos + len(x)] = out.float().cpu()
                pos += len(x)
                done += len(x)
                self._progress("features", done, total)
        self.cache = store
        self.timings["cache_s"] = self.timings.get("cache_s", 0.0) + time.perf_counter() - t0

    def _view_choice(self, phase_index: int, epoch: int) -> torch.Tensor | None:
        views = self.config.views
        if views == 1:
            return None
        g = torch.Generator().manual_seed(sample_seed(self.config.seed, phase_index, epoch, -3 & 0xFFFFFFFF))
        return torch.randint(0, views, (len(self.train_samples),), generator=g)

    # ---- 3) batches per phase ------------------------------------------------------------
    def _train_batches(self, phase_index: int, epoch: int, start: int):
        c = self.config
        order = epoch_order(len(self.train_samples), seed=c.seed, phase=phase_index, epoch=epoch)
        kind = "features" if start == self.model.num_stages else "prefix"
        if start > 0:
            return cached_batches(
                self.cache[("train", kind)], self.train_labels, batch_size=c.batch_size, order=order,
                view_choice=self._view_choice(phase_index, epoch),
            )
        tf = train_transform(c.augmentation, size=self.pre["image_size"], mean=self.pre["mean"], std=self.pre["std"])
        ds = TransformedImages(self.train_images, self.train_labels, tf, seed=c.seed, phase=phase_index, epoch=epoch)
        cuda = self.device.type == "cuda"
        return image_batches(
            ds, batch_size=c.batch_size, order=order, num_workers=resolve_workers(c.num_workers) if cuda else 0, pin_memory=cuda
        )

    def _val_batches(self, start: int):
        bs = max(64, self.config.batch_size)
        if start > 0:
            kind = "features" if start == self.model.num_stages else "prefix"
            return cached_batches(self.cache[("val", kind)], self.val_labels, batch_size=bs)
        tf = EvalTransform(size=self.pre["image_size"], mean=self.pre["mean"], std=self.pre["std"])
        return image_batches(TransformedImages(self.val_images, self.val_labels, tf), batch_size=bs, pin_memory=self.device.type == "cuda")

    def _build_optimizer(self, phase: str) -> torch.optim.Optimizer:
        from training.optim import build_optimizer

        c = self.config
        lr = c.head_lr if phase == "head" else c.finetune_lr
        groups = param_groups(self.model, head_lr=lr, backbone_lr=lr * c.backbone_lr_mult, weight_decay=c.weight_decay)
        return build_optimizer(c.optimizer, groups, lr=lr, weight_decay=c.weight_decay)

    # ---- 4) the loop ---------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        c = self.config
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.resume and not (self.out_dir / ckpt.CHECKPOINT_DIR / "last.json").is_file():
            if (self.out_dir / ckpt.META_FILE).is_file():
                return load_result(self.out_dir)  # already finished
        self._prepare()

        start_phase, start_epoch, phase_done, opt_state = 0, 0, False, None
        loaded = ckpt.load_training_checkpoint(self.out_dir) if self.resume else None
        if loaded is not None:
            model_state, opt_state, progress = loaded
            if progress.get("config") != self._config_fingerprint() or progress.get("classes") != self.classes:
                raise TrainingError(
                    f"The checkpoint in {self.out_dir} belongs to a different configuration or dataset; "
                    "start the run in a new folder or without resume."
                )
            self.model.load_state_dict(model_state)
            start_phase, start_epoch = progress["phase_index"], progress["epoch"]
            phase_done = progress["phase_done"]
            self.history = progress["history"]
            self.best_loss = progress["best_loss"] if progress["best_loss"] is not None else math.inf
            self.best_epoch = progress["best_epoch"]
            self.bad_epochs = progress["bad_epochs"]
            self.step_counter = progress["step"]
        else:
            ckpt.remove_training_checkpoint(self.out_dir)
            ckpt.remove_run_files(self.out_dir)  # a half-new folder must not look like a finished run
            self._save_checkpoint(0, 0, False, None)  # a run cancelled before its first epoch resumes from here

        plan = self._phase_plan()
        if phase_done or (start_epoch >= plan[start_phase][1]):
            start_phase, start_epoch, opt_state = start_phase + 1, 0, None

        split = self._finetune_split()
        need_head = c.cache_features and start_phase == 0 and c.head_epochs > 0
        need_prefix = split is not None and c.finetune_epochs > 0
        try:
            self._decode()
            if need_head or need_prefix:
                self._build_caches(need_head, split if need_prefix else None)
            if need_head and not self.history:
                # What the new head knows before its first epoch (pretrained rows or random).
                start = self.model.num_stages
                before = evaluate(self.model, self._val_batches(start), start_stage=start, device=self.device)
                self.timings["initial_val_acc"] = before["acc"]
                self.timings["initial_val_loss"] = before["loss"]
            for phase_index in range(start_phase, len(plan)):
                name, epochs, n_unfrozen = plan[phase_index]
                if epochs == 0:
                    continue
                first_epoch = start_epoch if phase_index == start_phase else 0
                self._run_phase(phase_index, name, epochs, n_unfrozen, first_epoch, opt_state, split)
                opt_state = None
        except Cancelled:
            # The last completed epoch is already on disk (or the initial state): resume continues there.
            raise Cancelled(
                f"The run was cancelled; {len(self.history)} epoch(s) are saved in {self.out_dir / ckpt.CHECKPOINT_DIR} "
                "and resume continues from the last one."
            ) from None
        return self._finish(split)

    def _start_stage(self, phase: str, split: int | None) -> int:
        c = self.config
        if phase == "head":
            return self.model.num_stages if c.cache_features else 0
        return split if split is not None else 0

    def _run_phase(
        self,
        phase_index: int,
        phase: str,
        epochs: int,
        n_unfrozen: int | None,
        first_epoch: int,
        opt_state: dict[str, Any] | None,
        split: int | None,
    ) -> None:
        c = self.config
        # Freeze / unfreeze, then a fresh optimizer for the new trainable set (fastai, timm).
        self.model.unfreeze_last(n_unfrozen)
        self.model.freeze_batchnorm = c.freeze_batchnorm and phase == "finetune"
        optimizer = self._build_optimizer(phase)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
        start = self._start_stage(phase, split)
        batches = num_batches(len(self.train_samples), c.batch_size)
        total_steps = epochs * batches
        self.reporter.on_phase_start(phase=phase, epochs=epochs, batches_per_epoch=batches)
        if first_epoch == 0:
            self.bad_epochs = 0
        for epoch in range(first_epoch, epochs):
            torch.manual_seed(sample_seed(c.seed, phase_index, epoch, -2 & 0xFFFFFFFF))  # dropout
            train = train_one_epoch(
                self.model,
                self._train_batches(phase_index, epoch, start),
                optimizer,
                start_stage=start,
                device=self.device,
                label_smoothing=c.label_smoothing,
                schedule=c.schedule,
                step=epoch * batches,
                total_steps=total_steps,
                on_batch=lambda b, loss, e=epoch: self.reporter.on_batch(
                    phase=phase, epoch=e + 1, batch=b, batches=batches, loss=loss
                ),
                should_stop=self.reporter.should_stop,
            )
            val = evaluate(self.model, self._val_batches(start), start_stage=start, device=self.device)
            metrics = {
                "train_loss": train["loss"],
                "train_acc": train["acc"],
                "val_loss": val["loss"],
                "val_acc": val["acc"],
                "val_top5": val["top5"],
                "lr": train["lr"],
                "seconds": train["seconds"] + val["seconds"],
            }
            self.history.append({"phase": phase, "epoch": epoch + 1, **metrics})
            improved = val["loss"] < self.best_loss - 1e-7
            if improved:
                self.best_loss = val["loss"]
                self.best_epoch = {"phase": phase, "epoch": epoch + 1, "val_loss": val["loss"], "val_acc": val["acc"]}
                self.bad_epochs = 0
                if c.early_stopping_patience > 0:
                    ckpt.save_best(self.out_dir, self.model.state_dict())
            else:
                self.bad_epochs += 1
            stop_phase = c.early_stopping_patience > 0 and self.bad_epochs >= c.early_stopping_patience
            self._save_checkpoint(phase_index, epoch + 1, stop_phase, optimizer)
            self.reporter.on_epoch_end(phase=phase, epoch=epoch + 1, metrics=metrics)
            if stop_phase:
                break

    # ---- 5) final evaluation and the run directory ---------------------------------------
    def _finish(self, split: int | None) -> FinetuneResult:
        c = self.config
        restored = False
        if c.early_stopping_patience > 0:
            best = ckpt.load_best(self.out_dir)
            if best is not None:
                self.model.load_state_dict(best)
                restored = True
        ran_finetune = any(h["phase"] == "finetune" for h in self.history)
        finetuned_now = ran_finetune and not (restored and self.best_epoch and self.best_epoch["phase"] == "head")
        if split is not None and ("val", "prefix") in getattr(self, "cache", {}):
            start = split
        elif not finetuned_now and c.cache_features and ("val", "features") in getattr(self, "cache", {}):
            start = self.model.num_stages
        else:
            start = 0
        result = evaluate(self.model, self._val_batches(start), start_stage=start, device=self.device, return_outputs=True)
        report = classification_report(result["probs"], result["targets"], self.classes)
        probs = result["probs"]
        conf, pred = probs.max(1) if probs.numel() else (torch.zeros(0), torch.zeros(0, dtype=torch.long))
        report["predictions"] = [
            {
                "path": s.relpath,
                "true": self.classes[s.label],
                "pred": self.classes[int(p)],
                "confidence": float(cf),
                "correct": int(p) == s.label,
            }
            for s, p, cf in zip(self.val_samples, pred, conf)
        ]
        report["classes"] = self.classes
        report["root"] = str(self.val_root)
        report["loss"] = result["loss"]

        elapsed = time.perf_counter() - self.started
        metrics = {
            "val_acc": report["top1"],
            "val_top5": report["top5"],
            "val_loss": result["loss"],
            "best_val_acc": max([h["val_acc"] for h in self.history] + [report["top1"]]),
            "best_epoch": self.best_epoch,
            "restored_best": restored,
            "epochs": len(self.history),
            "train_images": len(self.train_samples),
            "val_images": len(self.val_samples),
            "seconds": elapsed,
            **{k: (round(v, 3) if k.endswith("_s") else v) for k, v in self.timings.items()},
        }
        meta = {
            "format": ckpt.FORMAT_VERSION,
            "backbone": self.backbone.name,
            "backbone_title": self.backbone.title,
            "num_classes": len(self.classes),
            "class_names": self.classes,
            "architecture": {"num_features": self.model.num_features, "dropout": c.head_dropout},
            "preprocessing": self.pre,
            "config": c.to_dict(),
            "metrics": metrics,
            "head_init": {
                "from_pretrained": c.init_head_from_pretrained,
                "matched_classes": [self.classes[i] for i in sorted(self.head_matches)],
            },
            "skipped": [list(s) for s in self.skipped],
            "device": str(self.device),
            "versions": ckpt.library_versions(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        state = {k: v for k, v in self.model.state_dict().items()}
        ckpt.save_run(self.out_dir, model_state=state, meta=meta, history=self.history, validation=report)
        ckpt.remove_training_checkpoint(self.out_dir)
        return FinetuneResult(self.out_dir, metrics, self.history, self.classes, self.skipped)

