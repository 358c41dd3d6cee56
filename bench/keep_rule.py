"""Which weights should a run keep: the converged head, or the fine-tuned model?

    .venv/bin/python bench/keep_rule.py --datasets ../shared/datasets [--task flowers-12] [--seeds 1 2 3 4 5] \
        [--flags="--finetune-lr 1e-4"]

The default recipe (``python -m training finetune``, no tuning flags; ``--no-head-init`` for the
dog tasks) runs once per seed on the photos *outside* the recipe's own test part (the splitter's
seed-0 15%, what bench/train_recipe.py reports), so each seed is a fresh 70/15/15 split of them
and no photo of the recipe's test part takes part in the choice made here. Every run records the
head's and the last fine-tune epoch's validation accuracy and loss and both test accuracies
(``head_test_acc``, ``finetuned_test_acc``); each keep rule is then applied to the validation
numbers and scored by the test accuracy of what it keeps. ``--flags`` measures a variant of the
recipe the same way (its results go to their own section).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import torch
from common import OUT_DIR, machine, parse_args, table, write_results
from train_recipe import data_for, run_cli

from training import checkpoint as ckpt
from training.config import TrainConfig
from training.splits import load_splits

TASKS = {"flowers-12": ("flowers", []), "dogs-20-no-head-init": ("dogs20", ["--no-head-init"])}

RULES = {
    "the head": lambda r: False,
    "fine-tuned": lambda r: True,
    "fine-tuned unless its val accuracy is lower (the recipe's rule)": lambda r: r["ft_val_acc"] >= r["head_val_acc"],
    "the lower val loss": lambda r: r["ft_val_loss"] < r["head_val_loss"],
    "fine-tuned unless val accuracy is lower, or equal with a higher val loss": lambda r: (
        r["ft_val_acc"] > r["head_val_acc"]
        or (r["ft_val_acc"] == r["head_val_acc"] and r["ft_val_loss"] <= r["head_val_loss"])
    ),
}


def pool_folder(root: Path) -> Path:
    """Symlinks to every photo outside the recipe's seed-0 test part, one folder per class."""
    splits = load_splits(TrainConfig(data_dir=str(root)))
    pool = Path(tempfile.mkdtemp(prefix="breedlab-keep-"))
    atexit.register(shutil.rmtree, pool, ignore_errors=True)
    for s in splits.train + splits.val:
        link = pool / splits.classes[s.label] / Path(s.path).name
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(Path(s.path).resolve())
    return pool


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], lambda p: (
        p.add_argument("--task", choices=tuple(TASKS), default="flowers-12"),
        p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5]),
        p.add_argument("--flags", default="", help='more CLI flags for every run, e.g. "--finetune-lr 1e-4"')))
    kind, extra = TASKS[args.task]
    extra = [*extra, *args.flags.split()]
    device = "cpu" if args.device == "auto" else args.device
    result_name = (f"keep-rule-{args.task}" + "".join(f"-{f.lstrip('-')}" for f in args.flags.split())
                   + ("" if device == "cpu" else f"-{device}"))
    pool = pool_folder(data_for(kind, args.datasets))
    info = machine()
    runs = []
    for seed in args.seeds:
        out = OUT_DIR / f"{result_name}-{seed}"
        shutil.rmtree(out, ignore_errors=True)
        run = run_cli(pool, out, device, [*extra, "--seed", str(seed)])
        m, meta = run["meta"]["metrics"], run["meta"]
        hist = ckpt.read_json(out / ckpt.HISTORY_FILE)
        head = [h for h in hist if h["phase"] == "head"][-1]
        tuned = [h for h in hist if h["phase"] == "finetune"]
        if not tuned:
            print(f"seed {seed}: the plan had no fine-tune epochs; left out", flush=True)
            continue
        r = {
            "seed": seed, "backbone": m["backbone"], "path": meta["plan"].get("path"), "views": meta["plan"]["views"],
            "epochs": meta["plan"]["finetune_epochs"], "wall_s": round(run["wall_s"], 1),
            "head_val_acc": head["val_acc"], "head_val_loss": head["val_loss"],
            "ft_val_acc": tuned[-1]["val_acc"], "ft_val_loss": tuned[-1]["val_loss"],
            "head_test_acc": m["head_test_acc"], "ft_test_acc": m["finetuned_test_acc"], "kept": m["kept"]["phase"],
        }
        runs.append(r)
        print(r, flush=True)
    rows = [[r["seed"], f"{r['backbone']}, {r['path']}, {r['views']} / {r['epochs']}", f"{100 * r['head_val_acc']:.1f}% / {r['head_val_loss']:.3f}",
             f"{100 * r['ft_val_acc']:.1f}% / {r['ft_val_loss']:.3f}", f"{100 * r['head_test_acc']:.1f}%",
             f"{100 * r['ft_test_acc']:.1f}%", r["wall_s"]] for r in runs]
    scores = {}
    for name, rule in RULES.items():
        acc = torch.tensor([r["ft_test_acc"] if rule(r) else r["head_test_acc"] for r in runs])
        scores[name] = acc.tolist()
    base = torch.tensor(scores["the head"])
    summary = [[name, f"{100 * torch.tensor(a).mean():.2f}%",
                f"{100 * (torch.tensor(a) - base).mean():+.2f} ± {100 * (torch.tensor(a) - base).std() / len(a) ** 0.5:.2f}",
                sum(1 for r in runs if RULES[name](r))] for name, a in scores.items()]
    markdown = (
        f"**Keep rule** ({args.task}{', ' + args.flags if args.flags else ''}, {info['gpu'] or 'CPU'}, the default recipe on photos outside the recipe's test part, one fresh 70/15/15 "
        f"split per seed; load average at start {info['load_average_at_start']}; "
        f"`.venv/bin/python bench/keep_rule.py --datasets ../shared/datasets --task {args.task} --seeds "
        f"{' '.join(map(str, args.seeds))}{' --flags=' + repr(args.flags) if args.flags else ''}"
        f"{' --device ' + device if device != 'cpu' else ''}`)\n\n"
        + table(["seed", "backbone, path, views / epochs", "head: val top-1 / loss", "last fine-tune epoch: val top-1 / loss",
                 "head: test", "fine-tuned: test", "wall s"], rows)
        + "\n\n"
        + table(["keep", "mean test top-1", "vs the head (points, mean ± s.e.)", "seeds it keeps fine-tuning"], summary)
    )
    write_results(result_name, {"task": args.task, "flags": args.flags, "runs": runs, "scores": scores, "machine": info}, markdown)


if __name__ == "__main__":
    main()
