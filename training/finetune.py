"""Transfer learning as in the lecture: freeze -> train the head -> unfreeze -> fine-tune.

1. Load the pretrained network and replace its classifier with a new head (its prior is the
   pretrained classifier's rows for classes the network already knows, zero for the others).
2. Split the photos into train / validation / test (``training.splits``), decode each once.
3. Time the first batches and plan the run to its budget (``training.plan``): how many
   augmented views of each training photo to cache, how many fine-tune epochs fit.
4. Freeze the backbone (parameters and BatchNorm statistics); one pass of the frozen part per
   cached view (``training.features``). Solve the head to convergence on those features
   (``training.head``: L-BFGS, regularisation chosen on validation), or train it for
   ``head_epochs`` with the chosen optimizer (the lecture's way).
5. Unfreeze the last N stages and fine-tune with the chosen optimizer (head and backbone rates,
   warm-up, cosine), the optimizer built fresh for the new trainable set; each epoch draws one
   cached view per photo.
6. Keep the fine-tuned weights unless they are worse on validation than the converged head;
   then, once, measure the kept model (and the head alone) on the test split.

Every epoch ends with validation, a reporter call and an atomic checkpoint; ``resume=True``
continues from the last completed epoch with the same plan. Given the seed, a CPU run is
bitwise reproducible.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch

from training import checkpoint as ckpt
from training.backbones import Backbone, get_backbone, init_head_from_classifier, match_original_classes
from training.backbones.registry import AUTO_BACKBONE, AUTO_CANDIDATES, choose_auto_backbone
from training.config import PATH_FIELDS, TrainConfig
from training.data import check_classes, decode_images, epoch_order, num_batches, sample_seed, warn_skipped
from training.engine import evaluate, train_one_epoch
from training.errors import Cancelled, ConfigError, DataError, TrainingError
from training.features import FeatureStore
from training.head import fit_head
from training.model import param_groups
from training.plan import Plan, make_plan
from training.reporting import NullReporter, Reporter
from training.results import FinetuneResult, finish_run, load_result
from training.splits import load_splits

PHASES = ("head", "finetune")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was requested but no CUDA GPU is available here.")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"Unknown device {name!r}; valid devices are auto, cpu, cuda.")
    return torch.device(name)


def finetune(config: TrainConfig, *, out_dir: Path, reporter: Reporter | None = None, resume: bool = False) -> FinetuneResult:
    """Fine-tune ``config.backbone`` on ``config.data_dir`` and write the run to ``out_dir``.

    Raises ConfigError/DataError/WeightsUnavailable for bad input, NonFiniteLoss when the loss
    diverges and Cancelled when ``reporter.should_stop()`` returns True (after a checkpoint).
    """
    return _Run(config, Path(out_dir), reporter or NullReporter(), resume).run()


class _Run:
    def __init__(self, config: TrainConfig, out_dir: Path, reporter: Reporter, resume: bool) -> None:
        from training.optim import OPTIMIZERS

        self.config = config.validate()
        if config.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Unknown optimizer {config.optimizer!r}; valid optimizers are {', '.join(OPTIMIZERS)}.")
        # "auto": chosen in _prepare, once the number of photos is known (training.plan.choose_backbone)
        self.backbone: Backbone | None = None if config.backbone == AUTO_BACKBONE else get_backbone(config.backbone)
        self.backbone_choice: dict[str, Any] | None = None
        self.device = resolve_device(config.device)
        self.out_dir = out_dir
        self.reporter = reporter
        self.resume = resume
        self.pre: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.best_epoch: dict[str, Any] | None = None
        self.best_loss = float("inf")
        self.bad_epochs = 0
        self.step_counter = 0
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.plan: Plan | None = None
        self.head_fit: dict[str, Any] = {}

    # ---- helpers -------------------------------------------------------------------------
    def _stop_check(self) -> None:
        if self.reporter.should_stop():
            raise Cancelled("The run was cancelled.")

    def _progress(self, what: str, done: int, total: int) -> None:
        hook = getattr(self.reporter, "on_progress", None)
        if hook is not None:
            hook(what=what, done=done, total=total)
        self._stop_check()

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
                "best_loss": None if self.best_loss == float("inf") else self.best_loss,
                "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
                "plan": self.plan.to_dict() if self.plan else None,
                "head_fit": self.head_fit,
                "backbone_choice": self.backbone_choice,
                "config": self._config_fingerprint(),
                "classes": self.classes,
            },
        )

    def _config_fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to resume: not where files are on this host (another host
        may resume from a copy of the folder), the split file's content instead of its path."""
        d = {k: v for k, v in self.config.to_dict().items() if k not in ("device", "num_workers", *PATH_FIELDS)}
        split = self.config.split_file
        return {**d, "split_sha256": hashlib.sha256(Path(split).read_bytes()).hexdigest() if split else None}

    def _fingerprint_matches(self, saved: dict[str, Any] | None) -> bool:
        saved, current = {k: v for k, v in (saved or {}).items() if k not in PATH_FIELDS}, self._config_fingerprint()
        if "split_sha256" not in saved:  # written before the split's hash was recorded
            current.pop("split_sha256")
        return saved == current

    # ---- 1) data and model ---------------------------------------------------------------
    def _prepare(self) -> None:
        c = self.config
        t0 = time.perf_counter()
        self.splits = load_splits(c)
        self.classes = self.splits.classes
        self.val_root = self.splits.val_root
        self.timings["split_s"] = time.perf_counter() - t0
        if self.backbone is None:
            self._choose_backbone()
        assert self.backbone is not None
        self.pre = self.backbone.preprocessing(self.backbone_choice["image_size"] if self.backbone_choice else c.image_size)
        torch.manual_seed(c.seed)
        self.model, parts = self.backbone.transfer_model(
            len(self.classes), pretrained=True, weights_path=c.backbone_weights, dropout=c.head_dropout
        )
        self.head_matches: dict[int, int] = {}
        self.head_prior = torch.zeros_like(self.model.head.weight)
        if c.init_head_from_pretrained:
            self.head_matches = match_original_classes(self.backbone, self.classes, Path(c.data_dir))
            with torch.no_grad():
                init_head_from_classifier(self.model, parts.classifier, self.head_matches)
                for new, old in self.head_matches.items():
                    self.head_prior[new] = parts.classifier.weight[old].float()
        self.model.freeze_backbone()
        self.model.to(self.device, memory_format=torch.channels_last)

    def _choose_backbone(self) -> None:
        """``backbone="auto"``: chosen to fit the budget; a resumed run keeps its checkpoint's choice."""
        c, s, last = self.config, self.splits, self.out_dir / ckpt.CHECKPOINT_DIR / "last.json"
        saved = ckpt.read_json(last).get("backbone_choice") if self.resume and last.is_file() else None
        matched = len(match_original_classes(get_backbone(AUTO_CANDIDATES[0]), s.classes, Path(c.data_dir))) == len(s.classes)
        self.backbone_choice = saved or choose_auto_backbone(
            image_size=c.image_size, device=self.device, budget_s=c.budget_seconds,
            classes_known=c.init_head_from_pretrained and matched, photos_known=matched,
            spent_s=time.perf_counter() - self.started, n_photos=len(s.train) + len(s.val) + len(s.test),
        )
        self.backbone = get_backbone(self.backbone_choice["name"])

    def _decode(self) -> None:
        c, splits = self.config, self.splits
        t0 = time.perf_counter()
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        samples = [s for p in parts.values() for s in p]
        images, failures = decode_images(
            [s.path for s in samples],
            resize_size=self.pre["resize_size"],
            interpolation=self.pre["interpolation"],
            num_workers=c.num_workers,
            on_progress=lambda done, total: self._progress("decode", done, total),
        )
        self.skipped = list(splits.skipped) + [(samples[i].relpath, why) for i, why in sorted(failures.items())]
        self.samples: dict[str, list] = {}
        self.images: dict[str, list[torch.Tensor]] = {}
        self.labels: dict[str, torch.Tensor] = {}
        offset = 0
        for name, part in parts.items():
            keep = [offset + i for i in range(len(part)) if offset + i not in failures]
            offset += len(part)
            self.samples[name] = [samples[i] for i in keep]
            self.images[name] = [images[i] for i in keep]
            self.labels[name] = torch.tensor([s.label for s in self.samples[name]], dtype=torch.long)
        present = {s.label for s in self.samples["train"]}
        absent = [cl for i, cl in enumerate(self.classes) if i not in present]
        if absent:
            raise DataError(f"Every class needs at least one training image; none for: {', '.join(absent)}.")
        if not self.samples["val"]:
            raise DataError("No validation image could be decoded.")
        check_classes(self.classes, self.samples["train"], root=c.data_dir, min_per_class=1)
        warn_skipped(self.skipped)
        self.timings["decode_s"] = time.perf_counter() - t0

    # ---- 2) the plan ---------------------------------------------------------------------
    def _unfreeze(self) -> int | None:
        n = self.config.unfreeze_blocks
        return None if n is None or n < 0 or n >= self.model.num_stages else n

    def _make_plan(self) -> Plan:
        c = self.config
        store = self.store
        costs = store.measure_costs(self.images["train"][:32], self.labels["train"][:32], unfreeze=self._unfreeze() or self.model.num_stages)
        self.timings["costs"] = {k: round(v * 1000, 3) for k, v in costs.__dict__.items() if v is not None}  # ms per image
        augment = c.augmentation != "none"
        return make_plan(
            budget_s=c.budget_seconds,
            spent_s=time.perf_counter() - self.started,
            n_train=len(self.samples["train"]),
            n_val=len(self.samples["val"]),
            n_test=len(self.samples["test"]),
            costs=costs,
            augment=augment,
            views=c.feature_views or None,
            finetune_epochs=c.finetune_epochs,
            unfreeze_blocks=self._unfreeze(),
            allow_images_path=self.device.type == "cuda" and c.cache_features and c.unfreeze_blocks is not None,
            classes_known=len(self.head_matches) == len(self.classes),
        )

    # ---- 3) the loop ---------------------------------------------------------------------
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
            if not self._fingerprint_matches(progress.get("config")) or progress.get("classes") != self.classes:
                raise TrainingError(
                    f"The checkpoint in {self.out_dir} belongs to a different configuration or dataset; "
                    "start the run in a new folder or without resume."
                )
            self.model.load_state_dict(model_state)
            start_phase, start_epoch = progress["phase_index"], progress["epoch"]
            phase_done = progress["phase_done"]
            self.history = progress["history"]
            self.best_loss = progress["best_loss"] if progress.get("best_loss") is not None else float("inf")
            self.best_epoch = progress["best_epoch"]
            self.bad_epochs = progress["bad_epochs"]
            self.step_counter = progress["step"]
            self.head_fit = progress.get("head_fit") or {}
            if progress.get("plan"):
                self.plan = Plan(**{k: v for k, v in progress["plan"].items() if k != "total_s"})
            if self.history:  # saved before it was reported: a worker lost between the two never reported it
                last = dict(self.history[-1])
                self.reporter.on_epoch_end(phase=last.pop("phase"), epoch=last.pop("epoch"), metrics=last)
        else:
            ckpt.remove_training_checkpoint(self.out_dir)
            ckpt.remove_run_files(self.out_dir)  # a half-new folder must not look like a finished run
            self._save_checkpoint(0, 0, False, None)  # a run cancelled before its first epoch resumes from here

        try:
            self._decode()
            self.store = FeatureStore(self.model, self.pre, self.device, seed=c.seed, augmentation=c.augmentation,
                                      progress=self._progress)
            if self.plan is None:
                self.plan = self._make_plan()
            plan = self.plan
            on_plan = getattr(self.reporter, "on_plan", None)
            if on_plan is not None:
                on_plan(plan={**plan.to_dict(), "backbone": self.backbone.name, "image_size": self.pre["image_size"]})  # an auto run's choice
            split = self.model.num_stages - plan.unfreeze_blocks if plan.path == "cached" and plan.unfreeze_blocks else None
            self.split = split if c.cache_features else None
            self.store.build(self.images, self.labels, views=plan.views, split=self.split)
            self.timings["cache_s"] = self.store.seconds
            phases = [("head", 1 if c.head_solver == "lbfgs" else c.head_epochs, 0),
                      ("finetune", plan.finetune_epochs, plan.unfreeze_blocks)]
            if phase_done or (start_phase < len(phases) and start_epoch >= phases[start_phase][1]):
                start_phase, start_epoch, opt_state = start_phase + 1, 0, None
            if start_phase == 0 and start_epoch == 0:
                before = evaluate(self.model, self.store.batches("val", "features", 256), start_stage=self.model.num_stages,
                                  device=self.device)
                self.timings["initial_val_acc"] = before["acc"]
                self.timings["initial_val_loss"] = before["loss"]
            for phase_index in range(start_phase, len(phases)):
                name, epochs, n_unfrozen = phases[phase_index]
                if epochs == 0:
                    continue
                first_epoch = start_epoch if phase_index == start_phase else 0
                if name == "head" and c.head_solver == "lbfgs":
                    self._solve_head()
                else:
                    self._run_phase(phase_index, name, epochs, n_unfrozen, first_epoch, opt_state)
                opt_state = None
                if name == "head":
                    ckpt.save_named(self.out_dir, "head", self.model.state_dict())
        except Cancelled:
            raise Cancelled(
                f"The run was cancelled; {len(self.history)} epoch(s) are saved in {self.out_dir / ckpt.CHECKPOINT_DIR} "
                "and resume continues from the last one."
            ) from None
        return finish_run(self)

    # ---- 4) the head ---------------------------------------------------------------------
    def _solve_head(self) -> None:
        """Phase 1 by L-BFGS on the cached features of every view; one history entry."""
        self.reporter.on_phase_start(phase="head", epochs=1, batches_per_epoch=1)
        t0 = time.perf_counter()
        x_train, y_train = self.store.all_views("train", "features")
        x_val = self.store.tensor("val", "features")
        fit = fit_head(
            x_train, y_train, x_val, self.labels["val"], num_classes=len(self.classes),
            prior=self.head_prior, label_smoothing=self.config.label_smoothing, should_stop=self._stop_check,
        )
        with torch.no_grad():
            self.model.head.weight.copy_(fit.weight)
            self.model.head.bias.copy_(fit.bias)
        self.head_fit = {"solver": "lbfgs", "lambda": fit.lam, "path": fit.path, "seconds": round(fit.seconds, 3)}
        metrics = {
            "train_loss": fit.train_loss, "train_acc": fit.train_acc, "val_loss": fit.val_loss, "val_acc": fit.val_acc,
            "val_top5": fit.val_top5, "lr": 0.0, "seconds": time.perf_counter() - t0,
        }
        self.reporter.on_batch(phase="head", epoch=1, batch=1, batches=1, loss=fit.train_loss)
        self._end_epoch(0, "head", 0, metrics, None)

    # ---- 5) epochs with an optimizer -----------------------------------------------------
    def _build_optimizer(self, phase: str) -> torch.optim.Optimizer:
        from training.optim import build_optimizer

        c = self.config
        lr = c.head_lr if phase == "head" else c.finetune_lr
        groups = param_groups(self.model, head_lr=lr, backbone_lr=lr * c.backbone_lr_mult, weight_decay=c.weight_decay)
        return build_optimizer(c.optimizer, groups, lr=lr, weight_decay=c.weight_decay)

    def _start_stage(self, phase: str) -> int:
        if phase == "head":
            return self.model.num_stages
        return self.split if self.split is not None else 0

    def _run_phase(
        self, phase_index: int, phase: str, epochs: int, n_unfrozen: int | None, first_epoch: int, opt_state: dict[str, Any] | None
    ) -> None:
        c = self.config
        # Freeze / unfreeze, then a fresh optimizer for the new trainable set (fastai, timm).
        self.model.unfreeze_last(n_unfrozen)
        self.model.freeze_batchnorm = c.freeze_batchnorm and phase == "finetune"
        optimizer = self._build_optimizer(phase)
        if opt_state is not None:
            optimizer.load_state_dict(opt_state)
        start = self._start_stage(phase)
        kind = "features" if start == self.model.num_stages else ("prefix" if start > 0 else "images")
        n_train = len(self.samples["train"])
        batches = num_batches(n_train, c.batch_size)
        total_steps = epochs * batches
        warmup = int(round(c.warmup_epochs * batches)) if phase == "finetune" else 0
        self.reporter.on_phase_start(phase=phase, epochs=epochs, batches_per_epoch=batches)
        if first_epoch == 0:
            self.bad_epochs = 0
        for epoch in range(first_epoch, epochs):
            torch.manual_seed(sample_seed(c.seed, phase_index, epoch, -2 & 0xFFFFFFFF))  # dropout
            order = epoch_order(n_train, seed=c.seed, phase=phase_index, epoch=epoch)
            train = train_one_epoch(
                self.model,
                self.store.train_batches(kind, batch_size=c.batch_size, order=order, phase=phase_index, epoch=epoch),
                optimizer,
                start_stage=start,
                device=self.device,
                label_smoothing=c.label_smoothing,
                mixup=c.mixup if phase == "finetune" else 0.0,
                schedule=c.schedule,
                warmup_steps=warmup,
                step=epoch * batches,
                total_steps=total_steps,
                on_batch=lambda b, loss, e=epoch: self.reporter.on_batch(
                    phase=phase, epoch=e + 1, batch=b, batches=batches, loss=loss
                ),
                should_stop=self.reporter.should_stop,
            )
            val = evaluate(self.model, self.store.batches("val", kind, max(64, c.batch_size)), start_stage=start, device=self.device)
            metrics = {
                "train_loss": train["loss"], "train_acc": train["acc"], "val_loss": val["loss"], "val_acc": val["acc"],
                "val_top5": val["top5"], "lr": train["lr"], "seconds": train["seconds"] + val["seconds"],
            }
            if self._end_epoch(phase_index, phase, epoch, metrics, optimizer):
                break

    def _end_epoch(self, phase_index: int, phase: str, epoch: int, metrics: dict[str, Any], optimizer: Any) -> bool:
        """Record an epoch; with early stopping keep the best weights (validation loss). True = stop the phase."""
        c = self.config
        self.history.append({"phase": phase, "epoch": epoch + 1, **metrics})
        improved = metrics["val_loss"] < self.best_loss - 1e-7
        if improved:
            self.best_loss = metrics["val_loss"]
            self.best_epoch = {"phase": phase, "epoch": epoch + 1, "val_loss": metrics["val_loss"], "val_acc": metrics["val_acc"]}
            self.bad_epochs = 0
            if c.early_stopping_patience > 0:
                ckpt.save_best(self.out_dir, self.model.state_dict())
        else:
            self.bad_epochs += 1
        stop_phase = c.early_stopping_patience > 0 and self.bad_epochs >= c.early_stopping_patience
        self._save_checkpoint(phase_index, epoch + 1, stop_phase, optimizer)
        self.reporter.on_epoch_end(phase=phase, epoch=epoch + 1, metrics=metrics)
        return stop_phase
