"""The class names of each backbone's original task: ImageNet (timm ships synsets and names
offline), CIFAR-10 and CIFAR-100; the ImageNet dog classes; the name normalising that class
matching uses.

A leaf: imports nothing else of training/.
"""

from __future__ import annotations

import functools
import re

IMAGENET_DOG_WNIDS = ("n02085620", "n02113978")  # first and last ImageNet dog class (118 classes)

CIFAR10_CLASSES = ("airplane automobile bird cat deer dog frog horse ship truck").split()
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray "
    "road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar "
    "sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle "
    "wardrobe whale willow_tree wolf woman worm"
).split()


@functools.lru_cache(maxsize=1)
def imagenet_info() -> tuple[tuple[str, ...], tuple[str, ...]]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    wnids = tuple(info.index_to_label_name(i) for i in range(1000))
    descriptions = tuple(info.index_to_description(i) for i in range(1000))
    return wnids, descriptions


def imagenet_wnids() -> list[str]:
    return list(imagenet_info()[0])


def imagenet_class_names() -> list[str]:
    """Readable ImageNet names: the first synonym of each class ("golden retriever")."""
    return [d.split(",")[0].strip() for d in imagenet_info()[1]]


def imagenet_dog_indices() -> frozenset[int]:
    """Indices of the 118 ImageNet dog classes (WordNet ids n02085620..n02113978)."""
    lo, hi = IMAGENET_DOG_WNIDS
    return frozenset(i for i, w in enumerate(imagenet_wnids()) if lo <= w <= hi)


def normalize_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()



def readable_class_name(description: str) -> str:
    """ImageNet's "Walker hound, Walker foxhound" -> "Walker hound"; "golden retriever" -> "Golden retriever"."""
    text = " ".join(description.split(",")[0].replace("_", " ").split())
    return text[:1].upper() + text[1:]


def imagenet_dog_breeds() -> list[tuple[int, str, str]]:
    """The 118 ImageNet dog classes in class-index order: (index, WordNet id, readable breed name)."""
    wnids, descriptions = imagenet_info()
    return [(i, wnids[i], readable_class_name(descriptions[i])) for i in sorted(imagenet_dog_indices())]
