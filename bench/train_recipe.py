"""Test accuracy and wall time of the default recipe, with a logistic-regression reference.

    .venv/bin/python bench/train_recipe.py --datasets ../shared/datasets [--tasks flowers-12 dogs-20 ...]

Each task runs ``python -m training finetune`` with no tuning flags (the default 5-minute budget
and ``--backbone auto``: the strongest EfficientNet-Lite that fits it; both dogs-120 tasks with
``--budget-minutes 15``, the issue's time for dogs-120) and reads its run directory: test accuracy of the
kept weights, of the converged head alone (the fine-tune phase's gain is the difference), which
phase and epoch were kept, the plan. Test photos are the splitter's seeded test part, which no
choice of the run saw (validation chose the head's regularisation and the kept weights).

The reference: scikit-learn's LogisticRegressionCV (C by 5-fold cross-validation on the training
part) on the same frozen features (the evaluation view) of the same training photos, scored on
the same test photos. Wall time of the recipe is the whole CLI process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from common import DOGS_20, OUT_DIR, REPO, dogs120, machine, parse_args, subset, table, write_results

TASKS = {
    # name: (data, extra CLI flags, target test top-1, wall-time limit in seconds or None)
    "flowers-12": ("flowers", [], 0.975, 300),
    "dogs-20": ("dogs20", [], 0.97, 60),
    "dogs-20-no-head-init": ("dogs20", ["--no-head-init"], 0.95, None),
    "dogs-120-no-head-init": ("dogs120", ["--no-head-init", "--budget-minutes", "15"], 0.80, None),
    "dogs-120": ("dogs120", ["--budget-minutes", "15"], 0.83, 900),
}


def data_for(kind: str, datasets: str) -> Path:
    if kind == "flowers":
        path = (Path(datasets) / "flowers-12").resolve()
        if not path.is_dir():
            sys.exit(f"error: {path} is missing (pass --datasets)")
        return path
    if kind == "dogs20":
        return subset(datasets, DOGS_20)
    return dogs120(datasets)


def run_cli(data: Path, out: Path, device: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "training", "finetune", "--data", str(data), "--out", str(out), "--quiet", "--json",
           "--device", device, *extra]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    meta = json.loads((out / "meta.json").read_text())
    return {"wall_s": wall, "meta": meta, "command": " ".join(cmd[1:]).replace(str(REPO) + "/", "")}


def logistic_reference(run_dir: Path, data: Path) -> dict:
    """LogisticRegressionCV on the frozen features of the run's own training part, scored on its test part."""
    import numpy as np
    from common import eval_features
    from sklearn.linear_model import LogisticRegressionCV

    from training.backbones import get_backbone
    from training.data import scan_image_folder

    t0 = time.perf_counter()
    meta = json.loads((run_dir / "meta.json").read_text())
    val = {p["path"] for p in json.loads((run_dir / "validation.json").read_text())["predictions"]}
    test = {p["path"] for p in json.loads((run_dir / "test.json").read_text())["predictions"]}
    classes, samples, _ = scan_image_folder(data)
    train = [s for s in samples if s.relpath not in val and s.relpath not in test]
    tests = [s for s in samples if s.relpath in test]
    model, _ = get_backbone(meta["backbone"]).transfer_model(len(classes))
    model.eval()

    def features(part):
        return eval_features(model, meta["preprocessing"], [s.path for s in part])[0].numpy()

    x_train, x_test = features(train), features(tests)
    y_train = np.array([s.label for s in train])
    y_test = np.array([s.label for s in tests])
    t1 = time.perf_counter()
    clf = LogisticRegressionCV(Cs=np.logspace(-3, 2, 8), cv=5, max_iter=3000).fit(x_train, y_train)
    acc = float((clf.predict(x_test) == y_test).mean())
    return {"test_acc": acc, "C": float(clf.C_[0]), "train_images": len(train), "test_images": len(tests),
            "fit_s": time.perf_counter() - t1, "seconds": time.perf_counter() - t0}


def row(name: str, run: dict) -> list:
    _, _, target, wall_limit = TASKS[name]
    m, plan, ref = run["metrics"], run["plan"] or {}, run["logistic_regression"]
    kept = m.get("kept") or {}
    met = m["test_acc"] >= target and (wall_limit is None or run["wall_s"] <= wall_limit)
    return [
        name, f"{run['meta_backbone']} {run['image_size']}", m["train_images"], m["test_images"], m["test_acc"], m.get("head_test_acc", "-"), ref["test_acc"],
        f"{(m.get('finetune_gain_test') or 0) * 100:+.1f}", f"{kept.get('phase')} {kept.get('epoch')}",
        f"{plan.get('views')} / {plan.get('finetune_epochs')}", run["wall_s"], wall_limit or "-", target,
        "yes" if met else "no",
    ]


def render(runs: dict, info: dict) -> str:
    """The RESULTS.md section for every task measured so far (a task run again replaces its row)."""
    rows = [row(name, runs[name]) for name in TASKS if name in runs]
    loads = ", ".join(f"{name}: {runs[name].get('load_average_at_start')}" for name in TASKS if name in runs)
    return "\n".join([
        "## Default recipe: test accuracy, the head alone, a logistic-regression reference, wall time",
        "",
        "Command: `.venv/bin/python bench/train_recipe.py --datasets ../shared/datasets [--tasks ...]` "
        f"(machine: {info['cpu_count']} CPU cores, GPU: {info['gpu'] or 'none'}; load average at each task's start: {loads}; "
        "the bench is run at nice 5 beside whatever else the machine runs).",
        "",
        table(["task", "backbone, px", "train photos", "test photos", "test top-1", "head alone", "logistic regression (C by 5-fold CV)",
               "fine-tune gain (points)", "kept", "views / fine-tune epochs", "wall s", "wall limit s", "target",
               "met"], rows),
        "",
        "Test = the splitter's seeded 15% of each class (duplicates kept in one part), never used for a choice; "
        "validation (another 15%) chose the head's regularisation and the kept weights. Stanford Dogs photos come "
        "from ImageNet, so ImageNet-pretrained numbers on them are optimistic; flowers-12 is the honest task.",
    ])


def main() -> None:
    import os

    from common import RESULTS_JSON_DIR

    args = parse_args(__doc__, lambda p: p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS)))
    info = machine()
    result_name = "train_recipe" + ("" if args.device in ("auto", "cpu") else f"-{args.device}")  # a GPU's runs apart
    saved = RESULTS_JSON_DIR / f"{result_name}.json"
    runs = json.loads(saved.read_text()).get("runs", {}) if saved.is_file() else {}
    runs = {k: v for k, v in runs.items() if k in TASKS and "meta_backbone" in v}
    for name in args.tasks:
        kind, extra, target, wall_limit = TASKS[name]
        data = data_for(kind, args.datasets)
        out = OUT_DIR / f"recipe-{name}"
        load = [round(x, 2) for x in os.getloadavg()]
        r = run_cli(data, out, args.device, extra)
        ref = logistic_reference(out, data)
        m = r["meta"]["metrics"]
        runs[name] = {"wall_s": r["wall_s"], "command": r["command"], "metrics": m, "plan": r["meta"]["plan"],
                      "meta_backbone": r["meta"]["backbone"], "image_size": r["meta"]["preprocessing"]["image_size"],
                      "backbone_choice": r["meta"].get("backbone_choice"),
                      "head_fit": r["meta"].get("head_fit"), "logistic_regression": ref, "load_average_at_start": load}
        print(f"{name}: test {m['test_acc']:.4f} (head {m.get('head_test_acc')}, logistic regression {ref['test_acc']:.4f}), "
              f"{r['wall_s']:.0f} s", flush=True)
    write_results(result_name, {"machine": info, "runs": runs}, render(runs, info))


if __name__ == "__main__":
    main()
