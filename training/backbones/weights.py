"""Where pretrained weights are found (``$BREEDLAB_WEIGHTS_DIR``, ``../shared/weights``, torch.hub's
cache), whether the network answers, and strict loading of a plain state_dict file.

Imports only training.errors.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from training.errors import WeightsUnavailable

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def weights_search_dirs() -> list[Path]:
    """``$BREEDLAB_WEIGHTS_DIR`` (os.pathsep-separated), ``$BREEDLAB_SHARED_DIR/weights``, ../shared/weights."""
    dirs: list[Path] = []
    env = os.environ.get("BREEDLAB_WEIGHTS_DIR")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    shared = os.environ.get("BREEDLAB_SHARED_DIR")
    if shared:
        dirs.append(Path(shared) / "weights")
    dirs.append(REPO_ROOT.parent / "shared" / "weights")
    return dirs


def hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_file(names: Sequence[str], extra_dirs: Sequence[Path] = ()) -> Path | None:
    for d in [*extra_dirs, *weights_search_dirs(), hub_checkpoint_dir()]:
        for name in names:
            if (d / name).is_file():
                return d / name
    return None


@functools.lru_cache(maxsize=8)
def network_reachable(host: str = "github.com", port: int = 443, timeout: float = 1.5) -> bool:
    """Whether ``host`` answers (cached per process; ``BREEDLAB_OFFLINE=1`` forces False)."""
    if os.environ.get("BREEDLAB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False



def load_plain_checkpoint(net: nn.Module, path: Path) -> None:
    """Strictly load a state_dict file (optionally wrapped in {"state_dict": ...}, "module." prefixes).

    Checkpoints with or without BatchNorm ``num_batches_tracked`` entries both load.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise WeightsUnavailable(f"Cannot read checkpoint {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path} does not hold a state_dict.")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    expected = net.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise WeightsUnavailable(
            f"{path} does not match {type(net).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"wrong shape {wrong[:3]}."
        )
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    net.load_state_dict(state, strict=True)
