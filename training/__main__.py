"""Command line: ``python -m training {backbones,finetune,evaluate,predict,export}``.

Bad input (missing folder, too few classes or images, unknown backbone or optimizer, ...) is one
``error: ...`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any, NoReturn

from training.errors import TrainingError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _one_line_warnings() -> None:
    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        print(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def build_parser() -> argparse.ArgumentParser:
    from training.config import TrainConfig

    d = TrainConfig(data_dir=".")
    p = _Parser(prog="python -m training", description="Breedlab's transfer-learning engine.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("backbones", help="list backbones and whether their weights are available here")
    b.add_argument("--json", action="store_true")

    f = sub.add_parser("finetune", help="fine-tune a pretrained backbone on an image folder")
    f.add_argument("--data", required=True, help="folder with one sub-folder of images per class")
    val = f.add_mutually_exclusive_group()
    val.add_argument("--val-data", help="separate validation folder (same class names)")
    val.add_argument("--val-split", type=float, default=d.val_fraction, help="fraction held out for validation")
    val.add_argument("--split-file", help='JSON {"train": [...], "val": [...], "test": [...]} relpaths under --data')
    f.add_argument("--test-data", help="separate test folder (with --val-data)")
    f.add_argument("--test-split", type=float, default=d.test_fraction, help="fraction held out for the test report")
    f.add_argument("--budget-minutes", type=float, default=d.budget_minutes,
                   help="time budget of the whole run; views and epochs are planned to fit it (0 = no budget)")
    f.add_argument("--backbone", default=d.backbone,
                   help="a name from `backbones`, or auto (default): the strongest EfficientNet-Lite that fits the budget")
    f.add_argument("--backbone-weights", help="checkpoint file to load instead of the default weights source")
    f.add_argument("--image-size", type=int, default=None)
    f.add_argument("--head-solver", default=d.head_solver, help="lbfgs (converged, default) | epochs (the optimizer, --head-epochs)")
    f.add_argument("--head-epochs", type=int, default=d.head_epochs, help="with --head-solver epochs")
    f.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs, help="default: planned to fit the budget")
    f.add_argument("--unfreeze-blocks", type=int, default=d.unfreeze_blocks, help="last N stages; -1 = all")
    f.add_argument("--optimizer", default=d.optimizer)
    f.add_argument("--lr", type=float, default=None, help="head-phase learning rate (default: the recipe's)")
    f.add_argument("--finetune-lr", type=float, default=None)
    f.add_argument("--backbone-lr-mult", type=float, default=d.backbone_lr_mult)
    f.add_argument("--weight-decay", type=float, default=d.weight_decay)
    f.add_argument("--schedule", default=d.schedule, help="constant | cosine | onecycle")
    f.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs, help="linear warm-up of the fine-tune phase")
    f.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    f.add_argument("--mixup", type=float, default=d.mixup, help="fine-tune phase mixup, Beta(a, a); 0 = off")
    f.add_argument("--batch-size", type=int, default=d.batch_size)
    f.add_argument("--augmentation", default=d.augmentation, help="none | light | standard")
    f.add_argument("--feature-views", type=int, default=d.feature_views, help="cached views per photo (0 = planned)")
    f.add_argument("--no-feature-cache", action="store_true", help="run the frozen backbone every epoch")
    f.add_argument("--dropout", type=float, default=d.head_dropout)
    f.add_argument(
        "--train-batchnorm", action="store_true", help="update BatchNorm statistics of unfrozen stages (default: fixed)"
    )
    f.add_argument("--early-stopping", type=int, default=d.early_stopping_patience, help="patience in epochs; 0 = off")
    f.add_argument("--seed", type=int, default=d.seed)
    f.add_argument("--device", default=d.device, help="auto | cpu | cuda")
    f.add_argument("--workers", type=int, default=d.num_workers)
    f.add_argument("--no-head-init", action="store_true", help="do not start the head from pretrained rows")
    f.add_argument("--out", required=True, help="run directory to write")
    f.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint in --out")
    f.add_argument("--quiet", action="store_true", help="no progress bars")
    f.add_argument("--json", action="store_true", help="print the final metrics as JSON")

    e = sub.add_parser("evaluate", help="score a finished run on a labelled folder")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--json", action="store_true")

    r = sub.add_parser("predict", help="top-5 classes for each image")
    r.add_argument("--model", required=True)
    r.add_argument("images", nargs="+")
    r.add_argument("--top-k", type=int, default=5)
    r.add_argument("--json", action="store_true")

    x = sub.add_parser("export", help="one zip with the ONNX graph, weights, labels, preprocessing and a model card")
    x.add_argument("--model", required=True, help="finished run directory")
    x.add_argument("--out", required=True, help="archive to write (.zip)")
    x.add_argument("--sample", help="photo stored in the archive with its answer (default: a validation photo)")
    return p


def _config_from_args(a: argparse.Namespace) -> Any:
    from training.config import TrainConfig, recipe_lrs

    head_lr, finetune_lr = a.lr, a.finetune_lr
    if head_lr is None or finetune_lr is None:
        recipe_head, recipe_ft = recipe_lrs(a.optimizer)
        head_lr = recipe_head if head_lr is None else head_lr
        finetune_lr = recipe_ft if finetune_lr is None else finetune_lr
    return TrainConfig(
        data_dir=a.data,
        val_dir=a.val_data,
        test_dir=a.test_data,
        val_fraction=a.val_split,
        test_fraction=a.test_split,
        split_file=a.split_file,
        budget_minutes=a.budget_minutes,
        head_solver=a.head_solver,
        backbone=a.backbone,
        backbone_weights=a.backbone_weights,
        image_size=a.image_size,
        head_epochs=a.head_epochs,
        finetune_epochs=a.finetune_epochs,
        unfreeze_blocks=a.unfreeze_blocks,
        optimizer=a.optimizer,
        head_lr=head_lr,
        finetune_lr=finetune_lr,
        backbone_lr_mult=a.backbone_lr_mult,
        weight_decay=a.weight_decay,
        schedule=a.schedule,
        warmup_epochs=a.warmup_epochs,
        label_smoothing=a.label_smoothing,
        mixup=a.mixup,
        batch_size=a.batch_size,
        augmentation=a.augmentation,
        feature_views=a.feature_views,
        cache_features=not a.no_feature_cache,
        head_dropout=a.dropout,
        freeze_batchnorm=not a.train_batchnorm,
        early_stopping_patience=a.early_stopping,
        seed=a.seed,
        device=a.device,
        num_workers=a.workers,
        init_head_from_pretrained=not a.no_head_init,
    ).validate()


def cmd_backbones(a: argparse.Namespace) -> int:
    from training.backbones import list_backbones

    infos = list_backbones()
    if a.json:
        print(json.dumps([{k: v for k, v in i.to_dict().items() if k != "original_classes"} for i in infos], indent=2))
        return 0
    for i in infos:
        mark = "yes" if i.weights_available else "no "
        print(f"{i.name:28s} {i.input_size:4d}px  weights: {mark}  {i.title}  [{i.weights_detail}]")
    return 0


def cmd_finetune(a: argparse.Namespace) -> int:
    from training.backbones import check_backbone
    from training.finetune import finetune
    from training.optim import OPTIMIZERS
    from training.reporting import ConsoleReporter

    if a.optimizer not in OPTIMIZERS:
        raise TrainingError(f"Unknown optimizer {a.optimizer!r}; valid optimizers are {', '.join(OPTIMIZERS)}.")
    config = _config_from_args(a)
    check_backbone(config.backbone)
    if not Path(config.data_dir).is_dir():
        raise TrainingError(f"Data folder {config.data_dir} does not exist or is not a folder.")
    result = finetune(config, out_dir=Path(a.out), reporter=ConsoleReporter(bars=not a.quiet), resume=a.resume)
    m = result.metrics
    if a.json:
        print(json.dumps({"out_dir": str(result.out_dir), **m}, indent=2))
    else:
        print(summary_line(m) + f" -> {result.out_dir}")
    return 0


def summary_line(m: dict[str, Any]) -> str:
    """One line: test accuracy (when there is a test split), validation, kept weights, fine-tune gain."""
    kept = m.get("kept") or {}
    parts = []
    if m.get("test_acc") is not None:
        parts.append(f"test top-1 {m['test_acc']:.4f} on {m['test_images']} images")
    parts.append(f"val top-1 {m['val_acc']:.4f} on {m['val_images']}")
    if kept:
        parts.append(f"kept: {kept.get('phase')} epoch {kept.get('epoch')}")
    if m.get("finetune_gain_test") is not None:
        parts.append(f"fine-tune gain over the head alone {m['finetune_gain_test'] * 100:+.1f} points (test)")
    if m.get("backbone"):
        parts.append(f"{m['backbone']} at {m['image_size']} px")
    return "done: " + ";  ".join(parts) + f"  ({m['seconds']:.1f}s)"


def cmd_evaluate(a: argparse.Namespace) -> int:
    from training.predict import Predictor, evaluate_folder

    if not Path(a.data).is_dir():
        raise TrainingError(f"Data folder {a.data} does not exist or is not a folder.")
    report = evaluate_folder(Predictor.from_dir(a.model), a.data)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"top-1 {report['top1']:.4f}  top-5 {report['top5']:.4f}  n={report['n']}")
        for name, v in report["per_class"].items():
            print(f"  {name:32s} precision {v['precision']:.3f}  recall {v['recall']:.3f}  n={v['support']}")
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from PIL import Image, UnidentifiedImageError

    from training.predict import Predictor

    predictor = Predictor.from_dir(a.model)
    images, names, skipped = [], [], []
    for path in a.images:
        try:
            with Image.open(path) as img:
                img.load()
                images.append(img.copy())
            names.append(path)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            skipped.append(f"{path} ({type(exc).__name__})")
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} unreadable file(s): {'; '.join(skipped)}", stacklevel=1)
    if not images:
        raise TrainingError("None of the given files is a readable image.")
    results = predictor.predict(images, top_k=a.top_k)
    if a.json:
        out = [{"image": n, "top": [{"class": c, "probability": p} for c, p in r]} for n, r in zip(names, results)]
        print(json.dumps(out, indent=2))
    else:
        for n, r in zip(names, results):
            print(n + ": " + ", ".join(f"{c} {p:.3f}" for c, p in r))
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from training.export import export_model

    result = export_model(a.model, a.out, sample=a.sample)
    print(f"exported {result.path} ({result.size / 1e6:.1f} MB; outputs {', '.join(result.outputs)})")
    return 0


COMMANDS = {"backbones": cmd_backbones, "finetune": cmd_finetune, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    _one_line_warnings()
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
