"""BDD100K split into domains by its official image attributes (DDN §4.1: weather × time of day).

For users who have the data (it cannot be downloaded by dynzoo). Two layouts of ``data_dir`` are read:

* the 2018 release: ``labels/bdd100k_labels_images_{train,val}.json`` and ``images/100k/{train,val}/``;
* the 2020 detection labels: ``labels/det_20/det_{train,val}.json`` and the same images.

Each label file is a JSON list of frames ``{"name": "<file>.jpg", "attributes": {"weather": …,
"timeofday": …, "scene": …}, "labels": [{"category": …, "box2d": {…}}, …]}``. A domain is one value
combination of the chosen attributes (``"night_rainy"``; "undefined" is kept as a value, which the paper
needs to reach 25 time × weather domains). The classification heads of dynzoo learn the ``scene``
attribute (an image-level label independent of the domain); the paper's detector is out of scope.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dynzoo.data.sources import read_images

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "weather": ("clear", "overcast", "partly cloudy", "rainy", "snowy", "foggy", "undefined"),
    "timeofday": ("daytime", "night", "dawn/dusk", "undefined"),
    "scene": ("city street", "highway", "residential", "parking lot", "tunnel", "gas stations", "undefined"),
}
SPLITS = {"train": "train", "test": "val"}  # the test labels are not public: evaluate on val
LABEL_FILES = ("labels/bdd100k_labels_images_{split}.json", "labels/det_20/det_{split}.json")


def label_file(data_dir: str | os.PathLike, split: str) -> Path:
    """The label JSON of ``split`` ("train" or "test" = BDD100K's val) in either layout."""
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}.")
    candidates = [Path(data_dir) / pattern.format(split=SPLITS[split]) for pattern in LABEL_FILES]
    for path in candidates:
        if path.is_file():
            return path
    raise ValueError(
        f"`data_dir`: no BDD100K labels for split {split!r}; looked for {', '.join(str(p) for p in candidates)}."
    )


def read_frames(data_dir: str | os.PathLike, split: str) -> list[dict]:
    """The frames (dicts) of the label file of ``split``."""
    path = label_file(data_dir, split)
    try:
        frames = json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not a JSON file ({e}).") from None
    if not isinstance(frames, list) or not all(isinstance(f, dict) and "name" in f for f in frames):
        raise ValueError(f"{path}: expected a JSON list of frames with a 'name' each.")
    return frames


def check_attributes(attributes: Sequence[str]) -> tuple[str, ...]:
    attributes = tuple(attributes)
    if not attributes or any(a not in ATTRIBUTES for a in attributes):
        raise ValueError(f"`attributes` must be a non-empty subset of {list(ATTRIBUTES)}, got {list(attributes)}.")
    return attributes


def attribute_value(frame: dict, attribute: str) -> str:
    """The frame's value of ``attribute`` ("undefined" when absent); a ValueError for a value outside the
    official vocabulary."""
    value = frame.get("attributes", {}).get(attribute, "undefined")
    if value not in ATTRIBUTES[attribute]:
        raise ValueError(f"frame {frame['name']!r}: {attribute} {value!r} is not one of {list(ATTRIBUTES[attribute])}.")
    return value


def domain_name(frame: dict, attributes: Sequence[str]) -> str:
    """``"night_rainy"``-style name of the frame's domain (spaces and slashes become '-')."""
    return "_".join(attribute_value(frame, a).replace(" ", "-").replace("/", "-") for a in attributes)


def split_by_domain(frames: list[dict], attributes: Sequence[str] = ("timeofday", "weather")) -> dict[str, list[dict]]:
    """``{domain: frames}``, domains sorted by name."""
    attributes = check_attributes(attributes)
    domains: dict[str, list[dict]] = {}
    for frame in frames:
        domains.setdefault(domain_name(frame, attributes), []).append(frame)
    return dict(sorted(domains.items()))


def image_dir(data_dir: str | os.PathLike, split: str) -> Path:
    return Path(data_dir) / "images" / "100k" / SPLITS[split]


def load_bdd100k_domains(
    data_dir: str | os.PathLike,
    split: str,
    image_size: int,
    attributes: Sequence[str] = ("timeofday", "weather"),
    target: str = "scene",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], tuple[str, ...]]:
    """``(images, labels, class names)`` of ``split`` grouped by domain: ``images[d]`` uint8
    (N, S, S, 3) resized to ``image_size``, ``labels[d]`` int32 indices of the ``target`` attribute's
    values. Every image file must exist (a ValueError names the first missing one)."""
    attributes = check_attributes(attributes)
    if target not in ATTRIBUTES or target in attributes:
        raise ValueError(
            f"`target` must be an attribute of {list(ATTRIBUTES)} not used for the domains "
            f"{list(attributes)}, got {target!r}."
        )
    folder = image_dir(data_dir, split)
    classes = ATTRIBUTES[target]
    images, labels = {}, {}
    for domain, frames in split_by_domain(read_frames(data_dir, split), attributes).items():
        files = [folder / f["name"] for f in frames]
        for f in files:
            if not f.is_file():
                raise ValueError(f"BDD100K image {str(f)!r} (listed in the {split} labels) does not exist.")
        images[domain] = read_images(files, image_size)
        labels[domain] = np.array([classes.index(attribute_value(f, target)) for f in frames], "int32")
    return images, labels, classes
