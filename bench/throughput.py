"""Training images per second: the engine versus a minimal hand-written PyTorch loop, same model
(EfficientNet-Lite0, new 20-class head) and same photos (dogs-20, --per-class photos each).

    .venv/bin/python bench/throughput.py --datasets ../shared/datasets [--per-class 16] [--epochs 2]

Rows:
- hand-written loop: torchvision ImageFolder + RandomResizedCrop/flip (JPEG decoded every epoch,
  2 worker processes), whole network trained, AdamW, contiguous tensors.
- engine, everything unfrozen: decoded-once uint8 images, seeded crops/flips, channels_last,
  ``train_one_epoch`` (same work per image as the loop).
- engine, recipe's fine-tune phase: last 2 stages unfrozen on cached outputs of the frozen part.
- engine, head phase: linear head on cached features.
The cost of the one-off passes (decoding, caching) is reported separately.
"""

from __future__ import annotations

import time

import torch
from common import DOGS_20, machine, parse_args, subset, table, write_results

from training.backbones import get_backbone
from training.data import (
    EvalTransform,
    TransformedImages,
    cached_batches,
    decode_images,
    image_batches,
    scan_image_folder,
    train_transform,
)
from training.engine import train_one_epoch
from training.model import param_groups
from training.optim import build_optimizer


def fresh_model(n_classes: int):
    torch.manual_seed(0)
    model, _ = get_backbone("efficientnet_lite0").transfer_model(n_classes, pretrained=True)
    return model


def hand_written(data, n_classes: int, epochs: int) -> float:
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    tf = T.Compose([
        T.RandomResizedCrop(224, scale=(0.6, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize([0.5] * 3, [0.5] * 3),
    ])
    loader = DataLoader(ImageFolder(str(data), transform=tf), batch_size=32, shuffle=True, num_workers=2)
    model = fresh_model(n_classes)
    model.unfreeze_last(-1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n, start = 0, time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += len(y)
    return n / (time.perf_counter() - start)


def main() -> None:
    args = parse_args(
        __doc__,
        lambda p: (p.add_argument("--per-class", type=int, default=16), p.add_argument("--epochs", type=int, default=2)),
    )
    data = subset(args.datasets, DOGS_20, per_class=args.per_class)
    classes, samples, _ = scan_image_folder(data)
    backbone = get_backbone("efficientnet_lite0")
    pre = backbone.preprocessing()
    labels = torch.tensor([s.label for s in samples])
    rows = []

    ips_loop = hand_written(data, len(classes), args.epochs)
    rows.append(["hand-written loop (JPEG decode per epoch, all layers train)", f"{ips_loop:.1f}", "-", "1.0x"])

    t0 = time.perf_counter()
    images, _ = decode_images([s.path for s in samples], resize_size=pre["resize_size"], num_workers=2)
    decode_s = time.perf_counter() - t0

    def engine_rate(model, batch_fn, start_stage: int, lr: float) -> float:
        opt = build_optimizer("adamw", param_groups(model, head_lr=lr, backbone_lr=lr * 0.1, weight_decay=1e-4), lr=lr)
        n, t = 0, time.perf_counter()
        for epoch in range(args.epochs):
            n += train_one_epoch(model, batch_fn(epoch), opt, start_stage=start_stage, schedule="constant")["n"]
        return n / (time.perf_counter() - t)

    tf = train_transform("light", size=pre["image_size"], mean=pre["mean"], std=pre["std"])
    model = fresh_model(len(classes)).to(memory_format=torch.channels_last)
    model.unfreeze_last(-1)
    order = lambda e: torch.randperm(len(samples), generator=torch.Generator().manual_seed(e))  # noqa: E731
    ips_full = engine_rate(
        model, lambda e: image_batches(TransformedImages(images, labels, tf, epoch=e), batch_size=32, order=order(e)), 0, 1e-4
    )
    rows.append(["engine, all layers train (decoded once)", f"{ips_full:.1f}", f"decode {decode_s:.1f}s once",
                 f"{ips_full / ips_loop:.1f}x"])

    # Cached outputs of the frozen part (one pass), then the recipe's last two stages + head.
    model = fresh_model(len(classes)).to(memory_format=torch.channels_last).eval()
    split = model.num_stages - 2
    eval_tf = EvalTransform(size=pre["image_size"], mean=pre["mean"], std=pre["std"])
    t0 = time.perf_counter()
    prefix, feats = [], []
    with torch.no_grad():
        for x, _ in image_batches(TransformedImages(images, labels, eval_tf), batch_size=16):
            mid = model.forward_stages(x.contiguous(memory_format=torch.channels_last), 0, split)
            prefix.append(mid)
            feats.append(model.forward_stages(mid, split))
    cache_s = time.perf_counter() - t0
    prefix_t, feats_t = torch.cat(prefix)[None], torch.cat(feats)[None]
    model.unfreeze_last(2)
    ips_recipe = engine_rate(
        model, lambda e: cached_batches(prefix_t, labels, batch_size=32, order=order(e)), split, 1e-3
    )
    rows.append(["engine, last 2 stages on cached frozen part (recipe's fine-tune phase)", f"{ips_recipe:.1f}",
                 f"feature pass {cache_s:.1f}s once", f"{ips_recipe / ips_loop:.1f}x"])
    model = fresh_model(len(classes))
    model.freeze_backbone()
    ips_head = engine_rate(
        model, lambda e: cached_batches(feats_t, labels, batch_size=32, order=order(e)), model.num_stages, 3e-3
    )
    rows.append(["engine, head on cached features (head phase)", f"{ips_head:.0f}", "same feature pass",
                 f"{ips_head / ips_loop:.0f}x"])

    info = machine()
    md = "\n".join([
        "## Training throughput: engine vs a minimal hand-written loop (EfficientNet-Lite0, 224 px)",
        "",
        f"Command: `.venv/bin/python bench/throughput.py --datasets ../shared/datasets --per-class {args.per_class} "
        f"--epochs {args.epochs}` ({len(samples)} dogs-20 photos, batch 32, {args.epochs} epochs; "
        f"{info['cpu_count']} CPU cores, GPU: {info['gpu'] or 'none'}; shared machine, noisy times).",
        "",
        table(["training loop", "train images / s", "one-off cost", "vs hand-written"], rows),
    ])
    write_results("throughput", {"machine": info, "rows": rows, "decode_s": decode_s, "cache_s": cache_s}, md)


if __name__ == "__main__":
    main()
