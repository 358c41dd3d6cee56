"""Which EfficientNet-Lite serves classes the pretrained network already knows best?

    .venv/bin/python bench/known_classes.py --datasets ../shared/datasets [--seeds 20] [--task dogs-20]

For each candidate of ``backbone=auto`` the frozen network's features of every photo are computed
once (the evaluation view); then, on many seeded random stratified 70/15/15 re-splits, the run's
own head (``training.head.fit_head``: L-BFGS, label smoothing 0.1, λ chosen on the re-split's
validation part) is fitted with the pretrained classifier's rows as its prior ("head init") and
without it, and scored on the re-split's test part. The mean over re-splits (with its standard
error) is what ``auto``'s choice for such classes (``training.backbones.registry``) was made on.
``--candidates efficientnet_lite1@280 ...`` compares other networks or input sizes (results under
``known-classes-<task>-sizes``).

Only photos outside the recipe's own test part (the splitter's seeded 15%, what
bench/train_recipe.py reports) take part, so that choice was made on no photo the recipe's test
accuracy is measured on.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from common import DOGS_20, dogs120, eval_features, machine, parse_args, subset, table, write_results

from training.backbones import get_backbone, match_original_classes
from training.backbones.registry import AUTO_CANDIDATES
from training.config import TrainConfig
from training.head import _score, fit_head
from training.splits import load_splits


def features(
    name: str, size: int | None, paths: list[Path], classes: list[str], root: Path
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The frozen network's pooled features of every photo at ``size`` px (None: the network's
    own), the prior, seconds per photo."""
    bb = get_backbone(name)
    pre = bb.preprocessing(size)
    model, parts = bb.transfer_model(len(classes), pretrained=True)
    model.eval()
    x, seconds = eval_features(model, pre, paths)
    prior = torch.zeros(len(classes), model.num_features)
    for new, old in match_original_classes(bb, classes, root).items():
        prior[new] = parts.classifier.weight[old].detach().float()
    return x, prior, seconds


def resplit(labels: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = random.Random(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        k = round(0.15 * len(idx))
        parts[2].extend(idx[:k])
        parts[1].extend(idx[k : 2 * k])
        parts[0].extend(idx[2 * k :])
    train, val, test = (torch.tensor(p) for p in parts)
    return train, val, test


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--seeds", type=int, default=20),
        p.add_argument("--task", choices=("dogs-20", "dogs-120"), default="dogs-20"),
        p.add_argument("--candidates", nargs="+", metavar="NAME[@PX]",
                       help="networks, each at its own input size or at PX (default: auto's candidates)")))
    candidates = [(n, int(px) if px else None) for n, _, px in (c.partition("@") for c in args.candidates or AUTO_CANDIDATES)]
    torch.manual_seed(0)
    root = subset(args.datasets, DOGS_20) if args.task == "dogs-20" else dogs120(args.datasets)
    splits = load_splits(TrainConfig(data_dir=str(root)))
    pool = splits.train + splits.val  # never the recipe's test part
    labels = [s.label for s in pool]
    y = torch.tensor(labels)
    info = machine()
    rows, data = [], {"task": args.task, "photos": len(pool), "seeds": args.seeds, "machine": info, "backbones": {}}
    for name, size in candidates:
        x, prior, per_photo = features(name, size, [s.path for s in pool], splits.classes, root)
        name = name if size is None else f"{name}@{size}"
        acc: dict[str, list[float]] = {"prior": [], "no prior": []}
        for seed in range(args.seeds):
            train, val, test = resplit(labels, seed)
            for tag, p in (("prior", prior), ("no prior", None)):
                h = fit_head(x[train], y[train], x[val], y[val], num_classes=len(splits.classes), prior=p, label_smoothing=0.1)
                acc[tag].append(_score(h.weight, h.bias, x[test], y[test])[1])
        stats = {k: (float(torch.tensor(v).mean()), float(torch.tensor(v).std()) / len(v) ** 0.5) for k, v in acc.items()}
        data["backbones"][name] = {"ms_per_photo": per_photo * 1000, "accuracy": acc, "mean_se": stats}
        rows.append([name, f"{per_photo * 1000:.1f}",
                     *(f"{100 * stats[k][0]:.1f} ± {100 * stats[k][1]:.1f}%" for k in ("prior", "no prior"))])
        print(rows[-1], flush=True)
    markdown = (
        f"**Known classes: which network** ({args.task}, {len(pool)} photos outside the recipe's test part, "
        f"{args.seeds} seeded 70/15/15 re-splits; head = training.head.fit_head; test top-1 mean ± standard error; "
        f"load average at start {info['load_average_at_start']}; "
        f"`.venv/bin/python bench/known_classes.py --datasets ../shared/datasets --task {args.task} --seeds {args.seeds}"
        f"{' --candidates ' + ' '.join(args.candidates) if args.candidates else ''}`)\n\n"
        + table(["backbone", "forward ms/photo", "head with the pretrained rows as prior", "head without prior"], rows)
    )
    write_results(f"known-classes-{args.task}" + ("-sizes" if args.candidates else ""), data, markdown)


if __name__ == "__main__":
    main()
