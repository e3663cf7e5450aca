"""Class → coarse category maps, the targets of CDB's controller category loss (CDB §3.2.2).

Built in: CIFAR-100's 20 superclasses (the dataset's own coarse labels, which the paper uses directly) and
a hand-made 5-category map of the offline digits (pairs of digits with similar strokes). Any other map is
given by the user and checked by :func:`category_map`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

# CIFAR-100 fine labels in label-index order (alphabetical), and each superclass's five members.
CIFAR100_CLASSES = (
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
)
CIFAR100_SUPERCLASSES = {  # in coarse-label index order
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
# Digits 0–9 paired by stroke shape (our choice: the paper has no digits experiment).
DIGITS_CATEGORIES = {
    "loops": (0, 8),
    "strokes": (1, 7),
    "open_curves": (2, 3),
    "closed_top": (4, 9),
    "round_bottom": (5, 6),
}


def _cifar100_map() -> np.ndarray:
    coarse = {fine: k for k, members in enumerate(CIFAR100_SUPERCLASSES.values()) for fine in members}
    return np.array([coarse[name] for name in CIFAR100_CLASSES], dtype="int32")


def _digits_map() -> np.ndarray:
    coarse = {digit: k for k, digits in enumerate(DIGITS_CATEGORIES.values()) for digit in digits}
    return np.array([coarse[d] for d in range(10)], dtype="int32")


BUILTIN_MAPS = {"cifar100": _cifar100_map, "digits": _digits_map}


def category_map(
    mapping: str | Sequence[int] | Mapping[int, int] | np.ndarray, num_classes: int | None = None
) -> np.ndarray:
    """The class → category map as an int32 array ``m`` (``m[class] = category``), checked.

    Args:
        mapping: a built-in name (``"cifar100"``: the 20 superclasses; ``"digits"``: 5 pairs of digits), the
            path of a JSON file holding a list or a ``{"class": category}`` object, a sequence with one
            category per class, or a dict class → category.
        num_classes: the classifier's classes; the map must cover exactly 0 … num_classes − 1.

    Categories must be the integers 0 … K − 1, each used by at least one class (K ≥ 2: one category
    teaches the controllers nothing).
    """
    source = mapping
    if isinstance(mapping, str):
        if mapping in BUILTIN_MAPS:
            mapping = BUILTIN_MAPS[mapping]()
        elif os.path.isfile(mapping):
            with open(mapping, encoding="utf-8") as f:
                mapping = json.load(f)
        else:
            raise ValueError(f"`category_map` must be one of {sorted(BUILTIN_MAPS)} or a JSON file, got {source!r}.")
    if isinstance(mapping, Mapping):
        try:
            items = {int(k): v for k, v in mapping.items()}
        except (TypeError, ValueError):
            raise ValueError(f"`category_map`: class keys must be integers, got {list(mapping)[:5]}.") from None
        if sorted(items) != list(range(len(items))):
            raise ValueError(
                f"`category_map` must give a category for every class 0…{len(items) - 1} "
                f"(missing: {sorted(set(range(max(items) + 1)) - set(items))[:10]})."
            )
        mapping = [items[k] for k in range(len(items))]
    try:
        values = np.asarray(mapping)
    except (TypeError, ValueError):
        raise ValueError(f"`category_map` must be a list of integer categories, got {source!r}.") from None
    if values.ndim != 1 or values.size == 0 or not np.issubdtype(values.dtype, np.integer):
        raise ValueError(
            f"`category_map` must be a non-empty list of integer categories (one per class), got {source!r}."
        )
    if num_classes is not None and values.size != num_classes:
        raise ValueError(f"`category_map` covers {values.size} classes but the model has {num_classes}.")
    used = np.unique(values)
    if used.min() < 0 or not np.array_equal(used, np.arange(used.size)):
        raise ValueError(f"`category_map`: categories must be the integers 0…K−1, each used, got {used.tolist()}.")
    if used.size < 2:
        raise ValueError("`category_map` needs at least 2 categories.")
    return values.astype("int32")


def category_matrix(mapping: np.ndarray) -> np.ndarray:
    """(classes, K) 0/1 matrix: a one-hot (or mixed, smoothed) class target times it is the category target."""
    return np.eye(int(mapping.max()) + 1, dtype="float32")[mapping]
