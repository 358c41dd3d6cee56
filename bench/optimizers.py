"""The default recipe with each of the lecture's optimizers (and AdamW, the default) on dogs-20.

    .venv/bin/python bench/optimizers.py --datasets ../shared/datasets [--seed 0]

Everything but ``--optimizer`` stays at the recipe's defaults; each optimizer's learning rates
are the recipe's scaled by its default learning rate (``training.config.recipe_lrs``).
"""

from __future__ import annotations

from common import DOGS_20, OUT_DIR, machine, parse_args, subset, table, write_results
from train_recipe import run_cli

from training.config import recipe_lrs

OPTIMIZERS = ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw"]


def main() -> None:
    args = parse_args(__doc__, lambda p: p.add_argument("--seed", type=int, default=0))
    data = subset(args.datasets, DOGS_20)
    rows, runs = [], {}
    for name in OPTIMIZERS:
        r = run_cli(data, OUT_DIR / f"optimizer-{name}", args.device, ["--optimizer", name, "--seed", str(args.seed)])
        runs[name] = r
        m = r["metrics"]
        head_lr, ft_lr = recipe_lrs(name)
        best = m["best_epoch"]  # lowest validation loss: the weights early stopping restored
        head_end = [h for h in r["history"] if h["phase"] == "head"][-1]
        rows.append([name, f"{head_lr:g} / {ft_lr:g}", m.get("initial_val_acc", "-"), head_end["val_acc"], m["val_acc"],
                     m["val_loss"], f"{best['phase']} {best['epoch']}", r["wall_s"]])
    info = machine()
    md = "\n".join([
        "## The recipe with each optimizer (dogs-20, EfficientNet-Lite0)",
        "",
        f"Command: `.venv/bin/python bench/optimizers.py --datasets ../shared/datasets --seed {args.seed}` "
        f"({info['cpu_count']} CPU cores, GPU: {info['gpu'] or 'none'}; shared machine, noisy times).",
        "",
        table(["optimizer", "head lr / fine-tune lr", "top-1 before training", "top-1 after head phase",
               "final val top-1", "final val loss", "restored epoch (lowest val loss)", "wall s"], rows),
    ])
    write_results("optimizers", {"machine": info, "runs": runs}, md)


if __name__ == "__main__":
    main()
