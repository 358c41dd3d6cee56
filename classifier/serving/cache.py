"""Per-process cache of what serves: the active model version (hot-swapped) and the pretrained model.

1. Each request asks the database which version is active: one query on the partial unique
   index of ``is_active`` (id, promoted_at, path). When that differs from what this process
   serves, the new version is loaded under a lock and swapped in with one assignment, so a
   request sees either the old model or the new one, never half of each.
2. A version whose files fail to load is refused (logged with the reason, retried after
   ``RETRY_SECONDS``) and the model that was serving keeps serving.
3. Loaded models are kept by their files' identity (a small LRU), so a rollback to a recent
   version swaps back without reloading.
4. The pretrained "base" model is loaded once per process and backbone. The built-in model
   version (serving/builtin.py) answers with it, in its 118 ImageNet dog classes; it serves
   whenever no version is marked active.
5. ``warm_up`` loads and runs what will serve before the first request needs it;
   ``classifier.serving.warmup`` calls it in a background thread in every web process.

Imports classifier.models, classifier.serving.builtin, classifier.serving.calibration, classifier.serving.engine (besides Django
and libraries); never another domain's views or api.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings

from classifier.models import ModelVersion
from classifier.serving.builtin import BuiltinServingModel, thresholds_from_metrics
from classifier.serving.calibration import DEFAULT_THRESHOLDS, Thresholds, load_thresholds
from classifier.serving.engine import ServingModel, build_serving
from classifier.storage import remote

log = logging.getLogger(__name__)

RETRY_SECONDS = 60.0  # a version that failed to load is tried again after this long
LRU_SIZE = 2


class ModelUnavailable(Exception):
    """No model version can answer (none exists, or the active one could not be loaded)."""


@dataclass(frozen=True)
class VersionKey:
    id: int
    promoted_at: str
    path: str
    builtin: bool = False


@dataclass(frozen=True)
class Loaded:
    """One servable model version as this process holds it."""

    key: VersionKey
    version_id: int
    name: str
    backbone: str
    model: ServingModel
    thresholds: Thresholds
    calibration: dict | None
    builtin: bool = False


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: Loaded | None = None
        self.refused: dict[VersionKey, tuple[float, str]] = {}
        self.by_files: OrderedDict[tuple, ServingModel] = OrderedDict()
        self.base: dict[str, ServingModel] = {}
        self.hint: bytes | None = None  # the announcement seen at the last database check
        self.hint_checked = 0.0


_state = _State()


def reset() -> None:
    """Forget everything this process loaded (tests; a worker about to fork)."""
    global _state
    _state = _State()


def reset_current() -> None:
    """Forget which version serves and which were refused, keeping loaded models (tests)."""
    with _state.lock:
        _state.current = None
        _state.refused.clear()


_KEY_FIELDS = ("id", "promoted_at", "path", "kind")


def _key(row) -> VersionKey:
    return VersionKey(row[0], row[1].isoformat() if row[1] else "", row[2], row[3] == ModelVersion.Kind.BUILTIN)


def active_key() -> VersionKey | None:
    """The active version; the built-in model when none is active (it answers whenever no
    fine-tuned model has been promoted); None only when neither exists."""
    row = ModelVersion.objects.filter(is_active=True).values_list(*_KEY_FIELDS).first()
    if row is None:
        row = ModelVersion.objects.filter(kind=ModelVersion.Kind.BUILTIN).values_list(*_KEY_FIELDS).first()
    return _key(row) if row is not None else None


def run_dir_for(path: str) -> Path:
    """The version's folder, refusing paths that leave RUNS_ROOT."""
    relative = PurePosixPath(path or "")
    if not path or relative.is_absolute() or ".." in relative.parts or str(relative) in ("", "."):
        raise ValueError(f"model folder {path!r} is not inside the runs storage root")
    return remote.run_local(relative.as_posix())  # with object storage: downloaded on first use, kept per version


def _files_identity(folder: Path) -> tuple:
    st = (folder / "model.safetensors").stat()
    return (str(folder), st.st_size, st.st_mtime_ns, st.st_ino)


def _load(key: VersionKey) -> Loaded:
    version = ModelVersion.objects.get(pk=key.id)
    if version.is_builtin:
        return _load_builtin(key, version)
    folder = run_dir_for(version.path)
    identity = _files_identity(folder)
    model = _state.by_files.get(identity)
    if model is None:
        model = build_serving(
            folder,
            cache_dir=Path(settings.BREEDLAB_SERVING_CACHE_DIR),
            engine=settings.BREEDLAB_INFERENCE_ENGINE,
            threads=settings.BREEDLAB_INFERENCE_THREADS,
            int8=settings.BREEDLAB_INT8,
        )
        _state.by_files[identity] = model
        while len(_state.by_files) > LRU_SIZE:
            _state.by_files.popitem(last=False)
    else:
        _state.by_files.move_to_end(identity)
    thresholds, calibration = load_thresholds(folder, Path(settings.BREEDLAB_SERVING_CACHE_DIR), model_key(folder))
    log.info(
        "serving model version %s (%s, %s, engine %s %s, thresholds from %s)",
        version.pk, version.name, model.backbone, model.engine, model.details.get("precision", ""), thresholds.source,
    )
    return Loaded(key, version.pk, version.name, model.backbone, model, thresholds, calibration)


def _load_builtin(key: VersionKey, version: ModelVersion) -> Loaded:
    """The built-in model: the pretrained graph (shared with ``get_base``) answering in its dog classes."""
    model = BuiltinServingModel.from_base(_base_unlocked(version.backbone))
    thresholds, calibration = thresholds_from_metrics(version.metrics)
    log.info("serving the built-in model (version %s, %s, engine %s, thresholds: %s)",
             version.pk, model.backbone, model.engine, thresholds.source)
    return Loaded(key, version.pk, version.name, model.backbone, model, thresholds, calibration, builtin=True)


def model_key(folder: Path) -> str:
    """Names a version's calibration in the serving cache: its folder's identity."""
    import hashlib

    size, mtime = (folder / "model.safetensors").stat().st_size, (folder / "model.safetensors").stat().st_mtime_ns
    return hashlib.sha256(f"{folder}:{size}:{mtime}".encode()).hexdigest()[:24]


# How long an unchanged promotion announcement stands in for the active-version query; a change made
# without an announcement (none is made so today) is still seen within this time.
HINT_TRUST_SECONDS = 2.0


def get_active(hint: bytes | None = None) -> Loaded:
    """The model version to answer this request (the built-in one when none is active);
    ModelUnavailable when none exists or the active one cannot be loaded.

    ``hint``: the raw promotion announcement (versions.selectors.ACTIVE_MODEL_CACHE_KEY) read in the
    request's admission round trip. While it equals the one seen at the last database check (at most
    HINT_TRUST_SECONDS ago), the current model answers without a query; a promotion on any host
    changes it after its commit."""
    state = _state
    current = state.current
    if (hint is not None and current is not None and hint == state.hint
            and time.monotonic() - state.hint_checked < HINT_TRUST_SECONDS):
        return current
    checked = time.monotonic()
    key = active_key()
    if current is not None and current.key == key:
        state.hint, state.hint_checked = hint, checked
        return current
    if key is None:
        raise ModelUnavailable("No model version exists (not even the built-in one: run manage.py migrate).")
    refused = state.refused.get(key)
    if refused is not None and time.monotonic() - refused[0] < RETRY_SECONDS:
        return _fallback(current, refused[1])
    if current is not None:
        if not state.lock.acquire(blocking=False):
            return current  # another thread is loading the new version: the old one answers meanwhile
    else:
        state.lock.acquire()
    try:
        current = state.current
        if current is not None and current.key == key:
            state.hint, state.hint_checked = hint, checked
            return current
        refused = state.refused.get(key)
        if refused is not None and time.monotonic() - refused[0] < RETRY_SECONDS:
            return _fallback(current, refused[1])
        try:
            loaded = _load(key)
        except Exception as exc:  # noqa: BLE001 - a bad checkpoint must never take serving down
            reason = f"{type(exc).__name__}: {exc}"
            log.error("refusing model version %s (%s): %s; %s", key.id, key.path, reason,
                      f"version {current.version_id} keeps serving" if current else "no model serves")
            state.refused[key] = (time.monotonic(), reason)
            return _fallback(current, reason)
        state.refused.pop(key, None)
        state.current = loaded  # the swap: one assignment
        state.hint, state.hint_checked = hint, checked
        return loaded
    finally:
        state.lock.release()


def _fallback(current: Loaded | None, reason: str) -> Loaded:
    if current is None:
        raise ModelUnavailable(f"The active model cannot be loaded ({reason}).")
    return current


def warm_up() -> str:
    """Load the model that will answer the first request: the active version, or the pretrained
    model while none is active. Never raises (a web process must start regardless); returns what
    it did, for the log."""
    started = time.monotonic()
    try:
        try:
            loaded = get_active()
            model, what = loaded.model, f"model version {loaded.version_id} ({loaded.name})"
        except ModelUnavailable as exc:
            model, what = get_base(), f"the pretrained {settings.BREEDLAB_BASE_BACKBONE} ({exc})"
        # One throw-away answer, so the first real one finds preprocessing and ONNX Runtime run once.
        from PIL import Image

        model.classify([Image.new("RGB", (320, 240), (127, 127, 127))])
        message = f"warmed up {what} in {time.monotonic() - started:.1f} s"
        log.info(message)
        return message
    except Exception as exc:  # noqa: BLE001 - the first request will try again and report it
        log.warning("warm-up failed (the first request will load the model): %s: %s", type(exc).__name__, exc)
        return f"warm-up failed: {exc}"


def get_base(backbone: str | None = None) -> ServingModel:
    """The pretrained model alone (its original classes), loaded once per process and backbone."""
    name = backbone or settings.BREEDLAB_BASE_BACKBONE
    model = _state.base.get(name)
    if model is not None:
        return model
    with _state.lock:
        return _base_unlocked(name)


def _base_unlocked(name: str) -> ServingModel:
    """get_base for a caller that holds the lock (loading the built-in model)."""
    model = _state.base.get(name)
    if model is None:
        model = build_serving(
            None,
            backbone=name,
            cache_dir=Path(settings.BREEDLAB_SERVING_CACHE_DIR),
            engine=settings.BREEDLAB_INFERENCE_ENGINE,
            threads=settings.BREEDLAB_INFERENCE_THREADS,
        )
        _state.base[name] = model
    return model


def base_thresholds() -> Thresholds:
    return DEFAULT_THRESHOLDS


def get_version(version_id: int) -> Loaded:
    """A given version (the one that answered a stored prediction), without making it serve.

    The active version is returned as loaded; another one is loaded through the same LRU.
    """
    current = _state.current
    if current is not None and current.version_id == version_id:
        return current
    row = ModelVersion.objects.filter(pk=version_id).values_list(*_KEY_FIELDS).first()
    if row is None:
        raise ModelUnavailable("That model version no longer exists.")
    key = _key(row)
    with _state.lock:
        try:
            return _load(key)
        except Exception as exc:  # noqa: BLE001
            log.error("cannot load model version %s: %s", version_id, exc)
            raise ModelUnavailable(f"That model version cannot be loaded ({type(exc).__name__}).") from None
