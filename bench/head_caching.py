"""The frozen (head) phase with and without feature caching, on the 20-breed subset.

    .venv/bin/python bench/head_caching.py --datasets ../shared/datasets [--epochs 5]

Same config and seed; only ``cache_features`` differs. With caching the frozen backbone runs
once per image and every epoch trains the head on stored features; without it every epoch
runs the frozen backbone again. Reports time and the largest difference between the heads.
"""

from __future__ import annotations

import time

from common import DOGS_20, OUT_DIR, machine, parse_args, subset, table, write_results

from training.config import TrainConfig
from training.finetune import finetune


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--epochs", type=int, default=5))
    from safetensors.torch import load_file

    data = subset(args.datasets, DOGS_20)
    base = TrainConfig(
        data_dir=str(data), backbone="efficientnet_lite0", head_solver="epochs", budget_minutes=0, head_epochs=args.epochs, finetune_epochs=0,
        augmentation="none", device=args.device,
        early_stopping_patience=0,  # all epochs in both runs
    )
    rows, runs, heads = [], {}, {}
    for cached in (False, True):
        out = OUT_DIR / f"head-{'cached' if cached else 'plain'}"
        start = time.perf_counter()
        result = finetune(base.replace(cache_features=cached), out_dir=out)
        seconds = time.perf_counter() - start
        epochs_s = sum(h["seconds"] for h in result.history)
        heads[cached] = load_file(out / "model.safetensors")["head.weight"]
        m = result.metrics
        runs["cached" if cached else "plain"] = {"seconds": seconds, "metrics": m, "history": result.history}
        rows.append([
            "cached features" if cached else "backbone every epoch", args.epochs, m.get("cache_s", 0.0), epochs_s,
            epochs_s / args.epochs, seconds, m["val_acc"],
        ])
    diff = float((heads[True] - heads[False]).abs().max())
    info = machine()
    md = "\n".join([
        "## Head phase with and without feature caching (dogs-20, EfficientNet-Lite0)",
        "",
        f"Command: `.venv/bin/python bench/head_caching.py --datasets ../shared/datasets --epochs {args.epochs}` "
        f"({info['cpu_count']} CPU cores, GPU: {info['gpu'] or 'none'}; shared machine, noisy times).",
        "",
        table(["head phase", "epochs", "feature pass s", "training epochs s", "s / epoch", "total s (incl. decode, setup)",
               "val top-1"], rows),
        "",
        f"Largest absolute difference between the two trained heads' weights: {diff:.2e} (float rounding only).",
    ])
    write_results("head_caching", {"machine": info, "runs": runs, "max_abs_head_diff": diff}, md)


if __name__ == "__main__":
    main()
