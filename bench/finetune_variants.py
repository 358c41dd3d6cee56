"""Variants of the fine-tune phase on cached outputs of the frozen prefix: does fine-tuning pay?

    .venv/bin/python bench/finetune_variants.py --data ../shared/datasets/stanford-dogs-120 \
        --backbone efficientnet_lite2 --unfreeze 2 --views 4 base:epochs=5 lr1e-4:epochs=5 base:lr=3e-5,epochs=3

The run's own steps prepare the experiment (``training.finetune._Run``: the splitter's seeded
train / validation / test parts, ``--views`` augmented views of each training photo through the
frozen stages, the head solved by L-BFGS with λ chosen on validation, no head init unless
``--head-init``); the prefix outputs are cached under bench/out/ so later calls skip that pass.
Then each variant (``name[:key=value,...]``, see ``VARIANTS`` and ``run``'s keywords) starts from
the converged head and fine-tunes the last ``--unfreeze`` stages (torch's AdamW or SGD with
Nesterov momentum, warm-up then cosine), printing one JSON line: validation and test accuracy and
loss after the last epoch, validation per epoch, and the weights interpolated between the head
and the fine-tuned model (WiSE-FT, ``wise<α>``: val acc, val loss, test acc, test loss), EMA and
SWA where asked, and keeps it by variant in bench/results/<name>.json (the cache directory's
name under bench/out). Compare with the "head" line. Test numbers are printed for the record; choose
variants on validation.

``--resplit SEED`` (with ``--task`` instead of ``--data``) runs on a fresh 70/15/15 split (seeded
by SEED) of the photos *outside* the recipe's own seed-0 test part (bench/keep_rule.py's pool), so
that the test numbers printed are of photos no choice of the recipe touched:

    .venv/bin/python bench/finetune_variants.py --task dogs-20-no-head-init --resplit 1 --views 8 lr1e-3 bnaffine

Each variant also prints ``resolve``: the head solved again (L-BFGS, λ on validation) on the
fine-tuned stages' features of every view, with validation and test accuracy.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import OUT_DIR, RESULTS_JSON_DIR

from training.config import TrainConfig
from training.data import epoch_order
from training.engine import evaluate, lr_factor, mix_batch, mixed_loss
from training.features import FeatureStore
from training.finetune import _Run
from training.head import fit_head
from training.reporting import NullReporter

p = argparse.ArgumentParser(description="fine-tune phase variants on cached prefix outputs")
where = p.add_mutually_exclusive_group(required=True)
where.add_argument("--data", help="a folder with one sub-folder per class")
where.add_argument("--task", help="with --resplit: flowers-12 or dogs-20-no-head-init (bench/keep_rule.py's tasks)")
p.add_argument(
    "--resplit", type=int, help="a fresh split, seeded by this, of the photos outside the recipe's test part"
)
p.add_argument("--datasets", default="../shared/datasets", help="with --task")
p.add_argument("--backbone", default="efficientnet_lite2")
p.add_argument("--unfreeze", type=int, default=2)
p.add_argument("--views", type=int, default=4)
p.add_argument("--head-init", action="store_true")
p.add_argument("variants", nargs="*", default=["base"])
args = p.parse_args()
data, backbone, unfreeze, views, head_init = args.data, args.backbone, args.unfreeze, args.views, args.head_init
seed = 0
if args.task:
    from keep_rule import TASKS, pool_folder
    from train_recipe import data_for

    if args.resplit is None:
        p.error("--task needs --resplit SEED")
    kind, extra = TASKS[args.task]
    data, seed, head_init = str(pool_folder(data_for(kind, args.datasets))), args.resplit, "--no-head-init" not in extra
torch.set_num_threads(2)
cfg = TrainConfig(
    seed=seed,
    data_dir=data,
    backbone=backbone,
    init_head_from_pretrained=head_init,
    unfreeze_blocks=unfreeze,
    budget_minutes=0,
    feature_views=views,
    device="cpu",
)
out = OUT_DIR / (f"variants-{args.task}-resplit{seed}" if args.task else f"variants-{Path(data).resolve().name}")
r = _Run(cfg, out, NullReporter(), False)
t0 = time.time()
r._prepare()
r.store = FeatureStore(r.model, r.pre, r.device, seed=seed, augmentation="standard", progress=lambda *a: None)
r.split = r.model.num_stages - unfreeze
out.mkdir(parents=True, exist_ok=True)
cache = out / f"cache-{backbone}-{unfreeze}-{views}-{int(head_init)}.pt"
if cache.is_file():
    saved = torch.load(cache, weights_only=True)
    r.labels = saved["labels"]
    r.store.store, r.store.labels, r.store.views, r.store.split = saved["store"], r.labels, views, r.split
    r.samples = {k: [None] * len(v) for k, v in r.labels.items()}
else:
    r._decode()
    r.store.build(r.images, r.labels, views=views, split=r.split)
    torch.save({"labels": r.labels, "store": r.store.store}, cache)
print(
    f"# prepared {time.time() - t0:.0f}s stages={r.model.num_stages} split={r.split} train={len(r.labels['train'])}",
    flush=True,
)
r._solve_head()
print("# head lambda", r.head_fit["lambda"], flush=True)
state0 = copy.deepcopy(r.model.state_dict())
model, store, split = r.model, r.store, r.split


def ev(part, start=None, kind="prefix"):
    res = evaluate(model, store.batches(part, kind, 256), start_stage=split if start is None else start, device="cpu")
    return res["acc"], res["loss"]


# Every printed line is also kept, by variant, in bench/results/<run directory's name>.json.
record_file = RESULTS_JSON_DIR / f"{out.name}.json"
record = json.loads(record_file.read_text()) if record_file.is_file() else {}


def report(res):
    print(json.dumps(res), flush=True)
    record[res["variant"]] = res
    RESULTS_JSON_DIR.mkdir(exist_ok=True)
    record_file.write_text(json.dumps(record, indent=1) + "\n")


hv = ev("val", model.num_stages, "features")
ht = ev("test", model.num_stages, "features")
report(
    {"variant": "head", "val_acc": hv[0], "val_loss": round(hv[1], 4), "test_acc": ht[0], "test_loss": round(ht[1], 4)}
)


def resolve():
    """The head solved again (L-BFGS, λ on validation) on the fine-tuned stages' features."""

    def feats(x):
        model.eval()
        with torch.no_grad():
            return torch.cat([model.forward_stages(x[i : i + 256], split) for i in range(0, len(x), 256)])

    xt, yt = store.all_views("train", "prefix")
    fv, fte = feats(store.tensor("val", "prefix")), feats(store.tensor("test", "prefix"))
    fit = fit_head(
        feats(xt), yt, fv, store.labels["val"], num_classes=len(r.classes), label_smoothing=cfg.label_smoothing
    )
    test_acc = ((fte @ fit.weight.T + fit.bias).argmax(1) == store.labels["test"]).float().mean().item()
    return (round(fit.val_acc, 4), round(fit.val_loss, 4), round(test_acc, 4))


def run(
    name,
    epochs=10,
    lr=3e-4,
    bb_mult=1.0,
    wd=1e-4,
    ls=0.1,
    freeze_bn=True,
    l2sp=0.0,
    head_frozen=False,
    warmup=1.0,
    ema=0.0,
    opt="adamw",
    bs=32,
    swa_from=None,
    mom=0.9,
    stages=unfreeze,
    bn_only=False,
    mixup=0.0,
):
    torch.manual_seed(seed)
    mix_gen = torch.Generator().manual_seed(seed)
    mix_beta = torch.distributions.Beta(mixup, mixup) if mixup else None
    model.load_state_dict(state0)
    model.unfreeze_last(stages)  # stages < --unfreeze: the first cached-over stages run frozen
    model.freeze_batchnorm = freeze_bn
    bb = [p for s in model.stages[split:] for p in s.parameters() if p.requires_grad]
    if bn_only:  # only BatchNorm's affine weights train in the backbone
        bn = {
            id(p)
            for m in model.stages[split:].modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for p in m.parameters()
        }
        for p in bb:
            p.requires_grad_(id(p) in bn)
        bb = [p for p in bb if p.requires_grad]
    hd = list(model.head.parameters())
    if head_frozen:
        for p in hd:
            p.requires_grad_(False)
    ref = [p.detach().clone() for p in bb]
    groups = [
        {
            "params": [p for p in bb if p.ndim > 1],
            "lr": lr * bb_mult,
            "weight_decay": 0 if l2sp else wd,
            "base": lr * bb_mult,
        },
        {"params": [p for p in bb if p.ndim <= 1], "lr": lr * bb_mult, "weight_decay": 0, "base": lr * bb_mult},
    ]
    if not head_frozen:
        groups.append({"params": hd, "lr": lr, "weight_decay": wd, "base": lr})
    groups = [g for g in groups if g["params"]]
    if opt == "adamw":
        o = torch.optim.AdamW(groups, lr=lr)
    else:
        o = torch.optim.SGD(groups, lr=lr, momentum=mom, nesterov=True)
    for g in o.param_groups:
        g["initial_lr"] = g["base"]
    n = len(store.labels["train"])
    nb = math.ceil(n / bs)
    total = epochs * nb
    wsteps = int(warmup * nb)
    avg = None
    navg = 0
    ema_state = copy.deepcopy(model.state_dict()) if ema else None
    step = 0
    rows = []
    t = time.time()
    for e in range(epochs):
        model.train()
        order = epoch_order(n, seed=seed, phase=1, epoch=e)
        for x, y in store.train_batches("prefix", batch_size=bs, order=order, phase=1, epoch=e):
            f = lr_factor("cosine", step, total, wsteps)
            for g in o.param_groups:
                g["lr"] = g["base"] * f
            if mixup:  # manifold mixup: pairs of prefix outputs and their labels mixed
                x, y_other, lam = mix_batch(x, y, mix_beta, generator=mix_gen)
            logits = model.forward_from(x.contiguous(memory_format=torch.channels_last), split)
            if mixup:
                loss = mixed_loss(logits, y, y_other, lam, ls)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=ls)
            if l2sp:
                loss = loss + 0.5 * l2sp * sum(((p - p0) ** 2).sum() for p, p0 in zip(bb, ref) if p.ndim > 1)
            o.zero_grad()
            loss.backward()
            o.step()
            step += 1
            if ema:
                with torch.no_grad():
                    sd = model.state_dict()
                    for k, v in ema_state.items():
                        if v.dtype.is_floating_point:
                            v.mul_(ema).add_(sd[k], alpha=1 - ema)
        if swa_from is not None and e + 1 >= swa_from:
            sd = model.state_dict()
            if avg is None:
                avg = {k: v.clone().float() for k, v in sd.items()}
                navg = 1
            else:
                navg += 1
                for k in avg:
                    avg[k] += (sd[k].float() - avg[k]) / navg
        va = ev("val")
        rows.append((e + 1, round(va[0], 4), round(va[1], 4)))
    last = {"val": ev("val"), "test": ev("test")}
    res = {
        "variant": name,
        "secs": round(time.time() - t),
        "val_acc": last["val"][0],
        "val_loss": round(last["val"][1], 4),
        "test_acc": last["test"][0],
        "test_loss": round(last["test"][1], 4),
        "curve": rows,
    }
    res["resolve"] = resolve()
    fin = copy.deepcopy(model.state_dict())
    for a in (0.25, 0.5, 0.75):
        model.load_state_dict(
            {k: (state0[k] * (1 - a) + v * a) if v.dtype.is_floating_point else v for k, v in fin.items()}
        )
        v_, t_ = ev("val"), ev("test")
        res[f"wise{a}"] = (round(v_[0], 4), round(v_[1], 4), round(t_[0], 4), round(t_[1], 4))
    model.load_state_dict(fin)
    for tag, st in (("ema", ema_state), ("swa", avg)):
        if st is not None:
            cur = copy.deepcopy(model.state_dict())
            model.load_state_dict({k: v.to(cur[k].dtype) for k, v in st.items()})
            v_, t_ = ev("val"), ev("test")
            res[tag] = {"val_acc": v_[0], "val_loss": round(v_[1], 4), "test_acc": t_[0], "test_loss": round(t_[1], 4)}
            model.load_state_dict(cur)
    report(res)


VARIANTS = {
    "base": {},
    "lr1e-4": {"lr": 1e-4},
    "lr1e-3": {"lr": 1e-3},
    "bb0.1": {"bb_mult": 0.1},
    "bb0.1lr1e-3": {"lr": 1e-3, "bb_mult": 0.1},
    "headfrozen": {"head_frozen": True},
    "headfrozen1e-4": {"head_frozen": True, "lr": 1e-4},
    "l2sp": {"l2sp": 1e-2},
    "bn": {"freeze_bn": False},
    "ls0": {"ls": 0.0},
    "e20": {"epochs": 20},
    "ema": {"ema": 0.99},
    "swa": {"swa_from": 6},
    "sgd": {"opt": "sgd", "lr": 3e-3},
    "sgd1e-2": {"opt": "sgd", "lr": 1e-2},
    "bnaffine": {"bn_only": True, "lr": 1e-3},
    "last1": {"stages": 1, "lr": 1e-3},
    "l2sp1e-4": {"l2sp": 1e-2, "lr": 1e-4},
    "mixup": {"mixup": 0.4, "lr": 1e-3},
}
for v in args.variants:
    name, _, over = v.partition(":")
    kw = dict(VARIANTS.get(name, {}))
    for part in filter(None, over.split(",")):
        k, _, val = part.partition("=")
        kw[k] = (
            val
            if k == "opt"
            else (
                int(float(val))
                if k in ("epochs", "bs", "swa_from", "stages")
                else (val == "1" if k in ("freeze_bn", "head_frozen", "bn_only") else float(val))
            )
        )
    run(v, **kw)
