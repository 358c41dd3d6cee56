"""The lecture's optimizers, each with its own tuned learning rates, on flowers-12 without head init.

    .venv/bin/python bench/optimizers.py --datasets ../shared/datasets [--seed 0] [--views 4]

The lecture's way for every optimizer: the new head trained for epochs with it (the backbone
frozen), then the last two stages unfrozen and fine-tuned with it. Both phases run on cached
outputs of the frozen part (the plain photo and augmented views, computed once and shared by all
runs). Learning rates are tuned per optimizer and per phase on the validation split (a grid of
x3 steps around the optimizer's default); the chosen pair is what ``training.optim.OPTIMIZERS``
records as that optimizer's recipe rates. Test accuracy (the splitter's test part) is measured
once per optimizer, for its chosen rates; the per-epoch curves of that run are printed and saved.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import torch
from common import machine, parse_args, table, write_results

from training.backbones import get_backbone
from training.config import TrainConfig
from training.data import decode_images, epoch_order, num_batches
from training.engine import evaluate, train_one_epoch
from training.features import FeatureStore
from training.model import param_groups
from training.optim import OPTIMIZERS, build_optimizer
from training.splits import load_splits

HEAD_EPOCHS = 12
FINETUNE_EPOCHS = 5
UNFREEZE = 2
HEAD_GRID = (0.1, 0.3, 1.0, 3.0)  # x the optimizer's default learning rate
FINETUNE_GRID = (0.1, 0.3)  # x the chosen head rate


def train_phase(model, store, *, phase: int, optimizer_name: str, lr: float, backbone_mult: float, epochs: int,
                start: int, kind: str, seed: int, label_smoothing: float) -> list[dict]:
    groups = param_groups(model, head_lr=lr, backbone_lr=lr * backbone_mult, weight_decay=1e-4)
    opt = build_optimizer(optimizer_name, groups, lr=lr, weight_decay=1e-4)
    n = len(store.labels["train"])
    batches = num_batches(n, 32)
    curve = []
    for epoch in range(epochs):
        order = epoch_order(n, seed=seed, phase=phase, epoch=epoch)
        train = train_one_epoch(
            model, store.train_batches(kind, batch_size=32, order=order, phase=phase, epoch=epoch), opt,
            start_stage=start, label_smoothing=label_smoothing, schedule="cosine", warmup_steps=batches if phase else 0,
            step=epoch * batches, total_steps=epochs * batches,
        )
        val = evaluate(model, store.batches("val", kind, 256), start_stage=start)
        curve.append({"epoch": epoch + 1, "train_loss": train["loss"], "val_loss": val["loss"], "val_acc": val["acc"]})
        if not math.isfinite(train["loss"]):
            break
    return curve


def main() -> None:
    args = parse_args(__doc__, lambda p: (p.add_argument("--seed", type=int, default=0),
                                          p.add_argument("--views", type=int, default=4)))
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    data = Path(args.datasets) / "flowers-12"
    config = TrainConfig(data_dir=str(data), backbone="efficientnet_lite0", seed=args.seed, init_head_from_pretrained=False)
    splits = load_splits(config)
    backbone = get_backbone(config.backbone)
    pre = backbone.preprocessing()
    base, _ = backbone.transfer_model(len(splits.classes))
    base.freeze_backbone()
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    images, labels = {}, {}
    for name, samples in parts.items():
        decoded, failures = decode_images([s.path for s in samples], resize_size=pre["resize_size"],
                                          interpolation=pre["interpolation"])
        images[name] = [t for i, t in enumerate(decoded) if i not in failures]
        labels[name] = torch.tensor([s.label for i, s in enumerate(samples) if i not in failures])
    store = FeatureStore(base, pre, torch.device("cpu"), seed=args.seed, augmentation="standard")
    split = base.num_stages - UNFREEZE
    store.build(images, labels, views=args.views, split=split)
    cache_s = store.seconds
    print(f"cache: {args.views} views of {len(labels['train'])} photos in {cache_s:.0f} s", flush=True)

    rows, runs = [], {}
    for name, spec in OPTIMIZERS.items():
        t0 = time.perf_counter()
        # 1) the head, lr tuned on validation (accuracy, then loss)
        best_head = None
        for mult in HEAD_GRID:
            model = copy.deepcopy(base)
            lr = spec.default_lr * mult
            curve = train_phase(model, store, phase=0, optimizer_name=name, lr=lr, backbone_mult=1.0, epochs=HEAD_EPOCHS,
                                start=base.num_stages, kind="features", seed=args.seed, label_smoothing=0.1)
            key = (curve[-1]["val_acc"], -curve[-1]["val_loss"]) if math.isfinite(curve[-1]["val_loss"]) else (-1, 0)
            if best_head is None or key > best_head[0]:
                best_head = (key, lr, curve, model)
        _, head_lr, head_curve, head_model = best_head
        # 2) fine-tuning the last stages, lr tuned on validation
        best_ft = None
        for mult in FINETUNE_GRID:
            model = copy.deepcopy(head_model)
            model.unfreeze_last(UNFREEZE)
            model.freeze_batchnorm = True
            lr = head_lr * mult
            curve = train_phase(model, store, phase=1, optimizer_name=name, lr=lr, backbone_mult=1.0, epochs=FINETUNE_EPOCHS,
                                start=split, kind="prefix", seed=args.seed, label_smoothing=0.1)
            key = (curve[-1]["val_acc"], -curve[-1]["val_loss"]) if math.isfinite(curve[-1]["val_loss"]) else (-1, 0)
            if best_ft is None or key > best_ft[0]:
                best_ft = (key, lr, curve, model)
        _, ft_lr, ft_curve, model = best_ft
        head_test = evaluate(head_model, store.batches("test", "features", 256), start_stage=base.num_stages)
        test = evaluate(model, store.batches("test", "prefix", 256), start_stage=split)
        seconds = time.perf_counter() - t0
        runs[name] = {"head_lr": head_lr, "finetune_lr": ft_lr, "head_curve": head_curve, "finetune_curve": ft_curve,
                      "head_test_acc": head_test["acc"], "test_acc": test["acc"], "test_loss": test["loss"], "seconds": seconds}
        rows.append([name, f"{head_lr:g}", f"{ft_lr:g}", head_curve[-1]["val_acc"], ft_curve[-1]["val_acc"],
                     head_test["acc"], test["acc"], test["loss"], seconds])
        losses = " ".join(f"{c['val_loss']:.3f}" for c in head_curve + ft_curve)
        print(f"{name:9s} head lr {head_lr:g}, fine-tune lr {ft_lr:g}: test {test['acc']:.4f} (head {head_test['acc']:.4f}); "
              f"val loss per epoch: {losses}", flush=True)
    info = machine()
    md = "\n".join([
        "## The lecture's optimizers with their own tuned rates (flowers-12, no head init, EfficientNet-Lite0)",
        "",
        f"Command: `.venv/bin/python bench/optimizers.py --datasets ../shared/datasets --seed {args.seed} --views {args.views}` "
        f"({info['cpu_count']} CPU cores, GPU: {info['gpu'] or 'none'}; {args.views} cached views per photo, computed once "
        f"in {cache_s:.0f} s; whole script {time.perf_counter() - started:.0f} s).",
        "",
        f"Head: {HEAD_EPOCHS} epochs with the optimizer, learning rate tuned over {', '.join(f'{m:g}' for m in HEAD_GRID)} x its "
        f"default; then {FINETUNE_EPOCHS} fine-tune epochs with the last {UNFREEZE} stages unfrozen, learning rate tuned over "
        f"{', '.join(f'{m:g}' for m in FINETUNE_GRID)} x the head's. Both chosen on validation; test scored once.",
        "",
        table(["optimizer", "head lr", "fine-tune lr", "val top-1 after head", "val top-1 after fine-tune",
               "test top-1 head only", "test top-1", "test loss", "seconds"], rows),
        "",
        "Loss curves per epoch: `bench/results/optimizers.json` (head_curve, finetune_curve).",
    ])
    write_results("optimizers", {"machine": info, "runs": runs}, md)


if __name__ == "__main__":
    main()
