"""Does the converged head gain from augmented views of the training photos?

    .venv/bin/python bench/head_views.py --datasets ../shared/datasets [--task dogs-20] [--views 8] [--seeds 20]

The recipe solves its head (``training.head.fit_head``: L-BFGS, label smoothing 0.1, λ chosen on
validation) on every cached view of each training photo: view 0 is the evaluation view, the
others are the seeded ``standard`` augmentations of ``training.features.FeatureStore``. Here the
frozen network's features of ``--views`` views of every photo are computed once; then, on seeded
random stratified 70/15/15 re-splits, the head is solved on the first 1, 2, 4, ... views of the
re-split's training photos (validation and test: the evaluation view) and scored on its test part.
``--image-size`` crops the photos to another square than the network's own (results under
``head-views-<task>-<size>px``).

Only photos outside the recipe's own test part take part (as in bench/known_classes.py).
"""

from __future__ import annotations

import torch
from common import machine, parse_args, table, write_results
from known_classes import resplit
from train_recipe import data_for

from training.backbones import get_backbone
from training.config import TrainConfig
from training.data import decode_images
from training.features import FeatureStore
from training.head import _score, fit_head
from training.splits import load_splits

KINDS = {"dogs-20": "dogs20", "flowers-12": "flowers", "dogs-120": "dogs120"}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--task", choices=("dogs-20", "flowers-12", "dogs-120"), default="dogs-20"),
        p.add_argument("--backbone", default="efficientnet_lite2"),
        p.add_argument("--views", type=int, default=8),
        p.add_argument("--image-size", type=int, help="the square photos are cropped to (default: the network's own)"),
        p.add_argument("--seeds", type=int, default=20)))
    torch.manual_seed(0)
    torch.set_num_threads(2)
    root = data_for(KINDS[args.task], args.datasets)
    splits = load_splits(TrainConfig(data_dir=str(root)))
    pool = splits.train + splits.val  # never the recipe's test part
    labels = [s.label for s in pool]
    y = torch.tensor(labels)
    bb = get_backbone(args.backbone)
    pre = bb.preprocessing(args.image_size)
    model, _ = bb.transfer_model(len(splits.classes), pretrained=True)
    images, failures = decode_images([s.path for s in pool], resize_size=pre["resize_size"], interpolation=pre["interpolation"])
    if failures:
        raise SystemExit(f"error: {len(failures)} photo(s) could not be decoded")
    store = FeatureStore(model, pre, torch.device("cpu"), seed=0, augmentation="standard")
    store.build({"train": images}, {"train": y}, views=args.views, split=None)
    x = store.store[("train", "features")]  # (views, photos, features)
    counts = [n for n in (1, 2, 4, 8, 16) if n <= args.views]
    acc: dict[int, list[float]] = {n: [] for n in counts}
    lam: dict[int, list[float]] = {n: [] for n in counts}
    for seed in range(args.seeds):
        train, val, test = resplit(labels, seed)
        for n in counts:
            xt = x[:n, train].reshape(n * len(train), -1)
            h = fit_head(xt, y[train].repeat(n), x[0, val], y[val], num_classes=len(splits.classes), label_smoothing=0.1)
            acc[n].append(_score(h.weight, h.bias, x[0, test], y[test])[1])
            lam[n].append(h.lam)
        print(seed, {n: round(acc[n][-1], 4) for n in counts}, flush=True)
    info = machine()
    rows = []
    for n in counts:
        a = torch.tensor(acc[n])
        d = a - torch.tensor(acc[1])
        rows.append([n, f"{100 * a.mean():.1f} ± {100 * a.std() / len(a) ** 0.5:.1f}%",
                     "-" if n == 1 else f"{100 * d.mean():+.1f} ± {100 * d.std() / len(d) ** 0.5:.1f}",
                     f"{sorted(lam[n])[len(lam[n]) // 2]:g}"])
    size = f" --image-size {args.image_size}" if args.image_size else ""
    markdown = (
        f"**Head on augmented views** ({args.task}, {args.backbone} at {pre['image_size']} px, {len(pool)} photos outside the recipe's test part, "
        f"{args.seeds} seeded 70/15/15 re-splits, no head init; test top-1 mean ± standard error; the difference to "
        f"the evaluation view alone is paired by re-split; load average at start {info['load_average_at_start']}; "
        f"`.venv/bin/python bench/head_views.py --datasets ../shared/datasets --task {args.task} --views {args.views} "
        f"--seeds {args.seeds}{size}`)\n\n"
        + table(["training views per photo", "head test top-1", "vs evaluation view only (points)", "median λ"], rows)
    )
    name = f"head-views-{args.task}" + (f"-{args.image_size}px" if args.image_size else "")
    write_results(name, {"task": args.task, "backbone": args.backbone, "image_size": pre["image_size"], "photos": len(pool),
                                              "seeds": args.seeds, "accuracy": acc, "lambda": lam, "machine": info},
                  markdown)


if __name__ == "__main__":
    main()
