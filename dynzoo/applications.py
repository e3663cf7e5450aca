"""keras.applications' ImageNet utilities for every registered model (``preprocess_input``,
``decode_predictions``, ``load_image``) and the feature levels a backbone offers (``feature_levels``).

A dynzoo model built with ``include_preprocessing=True`` (the default) takes RGB in [0, 255] and
normalises it itself, like keras' MobileNetV3. One built with ``include_preprocessing=False`` takes what
the authors' PyTorch models take; :func:`preprocess_input` produces it.
"""

from __future__ import annotations

import json
import os
from functools import cache
from importlib import resources
from typing import Any

import keras
import numpy as np

from dynzoo.models.common import IMAGENET_MEAN, IMAGENET_STD, feature_levels_of
from dynzoo.registry import create_model, get_entry

# The builders' preprocessing layer and every pretrained entry of the manifest follow this convention
# (``zoo_configs/weights.json``, "imagenet_eval"); a model without pretrained weights uses it too.
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "value_range": [0, 1],
    "resize_shorter_side": 256,
    "center_crop": 224,
    "interpolation": "bilinear",
}
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


@cache
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The ImageNet-1k classes in the order of the models' outputs: (WordNet id, name) pairs, the name
    being the synset's first lemma with underscores, as keras' ``decode_predictions`` gives it."""
    text = resources.files("dynzoo.data").joinpath("imagenet_classes.json").read_text()
    return tuple((wnid, name) for wnid, name in json.loads(text))


def preprocessing_of(model: str | None = None, tag: str = "imagenet") -> dict[str, Any]:
    """The preprocessing of ``model``'s pretrained weights ``tag`` (mean, std, value range, resize, crop,
    interpolation), or :data:`DEFAULT_PREPROCESSING` for ``model=None`` and models without that tag."""
    if model is None:
        return dict(DEFAULT_PREPROCESSING)
    if not isinstance(model, str):
        raise ValueError(f"`model` must be a registered model's name or None, got {model!r}.")
    entry = get_entry(model)  # a ValueError names close matches
    weights = entry.pretrained.get(tag)
    return {**DEFAULT_PREPROCESSING, **((weights.preprocessing or {}) if weights else {})}


def _includes_preprocessing(model: keras.Model) -> bool:
    return any(layer.name == "preprocessing" for layer in model.layers)


def preprocess_input(x, model: str | keras.Model | None = None, tag: str = "imagenet"):
    """RGB images in [0, 255], (..., H, W, 3) channels last, prepared for a model as keras.applications'
    ``preprocess_input`` does.

    Args:
        x: a NumPy array (or anything ``np.asarray`` takes) or a backend tensor.
        model: a registered model's name: the normalisation of its pretrained weights ``tag`` (mean and
            std after scaling to the value range), the input of the model built with
            ``include_preprocessing=False``. A built Keras model: nothing to do if it includes its
            preprocessing (the default), the ImageNet normalisation if not. None: the ImageNet
            normalisation every dynzoo model uses.
        tag: the pretrained weights whose preprocessing a model name refers to.

    Returns:
        float32, of the kind of ``x`` (a NumPy array for NumPy input).
    """
    if isinstance(model, keras.Model):
        if _includes_preprocessing(model):
            return _as_float32(x)
        model = None
    spec = preprocessing_of(model, tag)
    tensor = keras.ops.is_tensor(x)
    values = x if tensor else np.asarray(x)
    if not values.shape or values.shape[-1] != 3:
        raise ValueError(
            f"`x` must be RGB images with 3 channels last, (..., H, W, 3); got shape {tuple(values.shape)}."
        )
    low, high = spec["value_range"]
    scale = np.array([(high - low) / (255.0 * s) for s in spec["std"]], "float32")
    offset = np.array([(low - m) / s for m, s in zip(spec["mean"], spec["std"], strict=False)], "float32")
    if tensor:
        return keras.ops.cast(values, "float32") * scale + offset
    return values.astype("float32") * scale + offset


def _as_float32(x):
    return keras.ops.cast(x, "float32") if keras.ops.is_tensor(x) else np.asarray(x, dtype="float32")


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, str, float]]]:
    """The ``top`` ImageNet classes of each row of ``preds`` (N, 1000) as (WordNet id, name, score),
    highest score first, as keras.applications' ``decode_predictions`` returns them."""
    classes = imagenet_classes()
    values = np.asarray(keras.ops.convert_to_numpy(preds) if keras.ops.is_tensor(preds) else preds)
    if values.ndim != 2 or values.shape[1] != len(classes):
        raise ValueError(
            f"`preds` must be a batch of ImageNet-1k predictions, shape (N, {len(classes)}); got shape {values.shape}."
        )
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not 1 <= top <= len(classes):
        raise ValueError(f"`top` must be an integer in [1, {len(classes)}], got {top!r}.")
    best = np.argsort(-values, axis=1, kind="stable")[:, :top]
    return [[(*classes[i], float(row[i])) for i in indices] for row, indices in zip(values, best, strict=False)]


def load_image(
    path: str | os.PathLike, model: str | None = None, tag: str = "imagenet", size: int | None = None
) -> np.ndarray:
    """An image file (JPEG, PNG, GIF, BMP; grayscale and alpha become RGB) resized and centre-cropped as
    ``model``'s pretrained weights ``tag`` were evaluated: shorter side to ``resize_shorter_side``, centre
    crop of ``center_crop``, with their interpolation (ImageNet's 256 → 224 bilinear by default).

    Args:
        path: the image file.
        model: a registered model's name, or None for the ImageNet default.
        tag: the pretrained weights whose preprocessing applies.
        size: another crop size; the shorter side is scaled in the same proportion.

    Returns:
        (crop, crop, 3) float32 RGB in [0, 255]: the input of :func:`preprocess_input`, or of a model
        that includes its preprocessing once a batch axis is added.
    """
    import tensorflow as tf

    from dynzoo.data.pipeline import resize_and_center_crop
    from dynzoo.data.sources import image_problem

    spec = preprocessing_of(model, tag)
    crop = spec["center_crop"] if size is None else size
    if isinstance(crop, bool) or not isinstance(crop, int) or crop < 1:
        raise ValueError(f"`size` must be a positive integer, got {size!r}.")
    if spec["interpolation"] not in INTERPOLATIONS:
        raise ValueError(f"{model}:{tag}: interpolation {spec['interpolation']!r} is not one of {INTERPOLATIONS}.")
    problem = image_problem(path, decode=True)
    if problem is not None:
        raise ValueError(f"`path`: {os.fspath(path)!r} {problem}.")
    image = tf.io.decode_image(tf.io.read_file(os.fspath(path)), channels=3, expand_animations=False)
    crop_fraction = spec["center_crop"] / spec["resize_shorter_side"]
    return resize_and_center_crop(image, crop, crop_fraction, method=spec["interpolation"]).numpy()


def feature_levels(model_name: str, **kwargs: Any) -> dict[int, dict[str, Any]]:
    """The feature levels ``create_model(model_name, include_top=False, feature_levels=…)`` offers: level L
    → {"stride": 2^L, "channels", "layer"} (the last feature map at that stride), read at the model's
    default input size. ``kwargs`` go to the builder (a width, an input shape …)."""
    model = create_model(model_name, include_top=False, **kwargs)
    return {
        level: {"stride": 2**level, "channels": channels, "layer": layer}
        for level, (layer, channels) in feature_levels_of(model).items()
    }


def feature_levels_table(levels: dict[str, dict[int, int]]) -> str:
    """Markdown: one row per model, the channels of each of its levels 1 to 5 (– where it has none)."""
    lines = [
        "| model | " + " | ".join(f"level {level} (stride {2**level})" for level in range(1, 6)) + " |",
        "|---|" + "---:|" * 5,
    ]
    for name, channels in levels.items():
        lines.append(f"| {name} | " + " | ".join(str(channels.get(level, "–")) for level in range(1, 6)) + " |")
    return "\n".join(lines)
