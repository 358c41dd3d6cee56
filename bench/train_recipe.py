"""Accuracy and wall time of the default recipe (``python -m training finetune`` with no tuning
flags) on the 20-breed subset and on all 120 breeds of stanford-dogs-120.

    .venv/bin/python bench/train_recipe.py --datasets ../shared/datasets [--only 20|120] [--seeds 0 1]

Wall time is the whole CLI process (interpreter start, imports, decoding, feature caching,
training, validation, writing the run directory).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from common import DOGS_20, OUT_DIR, REPO, dogs120, machine, parse_args, subset, table, write_results


def run_cli(data, out, device: str, extra: list[str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "training", "finetune", "--data", str(data), "--out", str(out), "--quiet", "--json",
           "--device", device, *(extra or [])]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    history = json.loads((out / "history.json").read_text())
    meta = json.loads((out / "meta.json").read_text())
    return {"wall_s": wall, "metrics": result, "history": history, "config": meta["config"], "command": " ".join(cmd)}


def main() -> None:
    args = parse_args(
        __doc__,
        lambda p: (p.add_argument("--only", choices=["20", "120"]), p.add_argument("--seeds", type=int, nargs="+", default=[0])),
    )
    sets = []
    if args.only in (None, "20"):
        sets.append(("dogs-20", subset(args.datasets, DOGS_20), 120.0, 0.95))
    if args.only in (None, "120"):
        sets.append(("dogs-120", dogs120(args.datasets), 900.0, 0.80))
    rows, runs = [], {}
    for name, data, budget, target in sets:
        for seed in args.seeds:
            r = run_cli(data, OUT_DIR / f"recipe-{name}-seed{seed}", args.device, ["--seed", str(seed)])
            m = r["metrics"]
            runs[f"{name}/seed{seed}"] = r
            rows.append([
                name, seed, m["train_images"], m["val_images"], m["val_acc"], m["val_top5"], m.get("initial_val_acc", "-"),
                r["wall_s"], m.get("cache_s", "-"), budget, target,
                "yes" if m["val_acc"] >= target and r["wall_s"] <= budget else "no",
            ])
    cfg = next(iter(runs.values()))["config"]
    recipe = ", ".join(f"{k}={cfg[k]}" for k in (
        "backbone", "head_epochs", "finetune_epochs", "unfreeze_blocks", "optimizer", "head_lr", "finetune_lr",
        "backbone_lr_mult", "schedule", "label_smoothing", "batch_size", "augmentation", "init_head_from_pretrained"))
    info = machine()
    flags = (f" --only {args.only}" if args.only else "") + (
        f" --seeds {' '.join(map(str, args.seeds))}" if args.seeds != [0] else ""
    )
    section = "train_recipe" + flags.replace(" --", "-").replace(" ", "_")
    md = "\n".join([
        "## Default recipe: accuracy and wall time" + (f" ({flags.strip()})" if flags else ""),
        "",
        f"Command: `.venv/bin/python bench/train_recipe.py --datasets ../shared/datasets{flags}` "
        f"(machine: {info['cpu_count']} CPU cores, GPU: {info['gpu'] or 'none'}, load average at start "
        f"{info['load_average_at_start']}; other jobs shared the machine, so times are noisy).",
        "",
        f"Recipe (the `TrainConfig` defaults): {recipe}.",
        "",
        table(["data", "seed", "train imgs", "val imgs", "val top-1", "val top-5", "top-1 before training",
               "wall s", "feature pass s", "budget s", "target top-1", "met"], rows),
        "",
        "Validation = a seeded stratified 20% of the photos, never used for training. "
        "Stanford Dogs photos come from ImageNet, so ImageNet-pretrained numbers are optimistic.",
    ])
    write_results(section, {"machine": info, "runs": runs}, md)


if __name__ == "__main__":
    main()
