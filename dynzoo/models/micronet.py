"""MicroNet-M0…M3 (thesis ch. 4), built from the official code's configurations in
``zoo_configs/micronet.json`` so that the authors' checkpoints load unchanged.

Paper: Y. Li et al., "MicroNet: Improving Image Recognition with Extremely Low FLOPs", ICCV 2021,
https://arxiv.org/abs/2108.05894;
chapter 4 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from dynzoo.config import load_config
from dynzoo.layers import MicroBlock, MicroStem
from dynzoo.layers.base import batchnorm, dense_initializer
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    register_family,
)
from dynzoo.weights import load_official_checkpoint

HEAD_PREFIXES = ("classifier.",)


def micronet_config(model_name: str) -> dict:
    return load_config("micronet")["models"][model_name]


def MicroNet(
    model_name: str,
    input_shape: Sequence[int | None] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = True,
    dropout_rate: float | None = None,
    name: str | None = None,
) -> keras.Model:
    """Build a MicroNet (``model_name`` one of ``micronet_m0`` … ``micronet_m3``).

    Args:
        input_shape: (H, W, 3); H and W multiples of 32 (or None). Default (224, 224, 3).
        include_top: keep the classifier (ReLU6 → GAP → h-swish → Linear+BN+h-swish → Dropout →
            Linear+BN+h-swish, as the official code; the logits themselves pass BN and h-swish).
        weights: None, "imagenet", or the path of an official ``.pth``/``.pth.tar`` checkpoint or a
            Keras ``.weights.h5`` file.
        input_tensor: optional Keras tensor to build on.
        pooling: with ``include_top=False``: None (the 7×7 feature map), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: applied after the logits; None returns the official logits.
        include_preprocessing: the model takes RGB in [0, 255] and normalises it with the ImageNet
            mean/std; False: it takes already-normalised input.
        dropout_rate: dropout before the last layer; default the official value of the model.
        name: model name; default ``model_name``.
    """
    if model_name not in load_config("micronet")["models"]:
        raise ValueError(f"`model_name` must be one of {list(load_config('micronet')['models'])}, got {model_name!r}.")
    cfg = micronet_config(model_name)
    height, width, channels = check_application_args(
        model_name=model_name,
        input_shape=input_shape,
        input_tensor=input_tensor,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
    )
    dropout_rate = cfg["dropout"] if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}.")

    inputs, x = model_input((height, width, channels), input_tensor)
    if include_preprocessing:
        x = imagenet_preprocessing(channels)(x)
    x = MicroStem(cfg["stem_groups"], name="stem")(x)
    sm = cfg["shift_max"]
    for index, block in enumerate(cfg["blocks"], start=1):
        x = MicroBlock(
            block_type=block["type"],
            filters=block["filters"],
            kernel_size=block.get("kernel_size", 1),
            strides=block.get("stride", 1),
            expansion=block["expansion"],
            expand_groups=block["expand_groups"],
            squeeze_groups=block.get("squeeze_groups", (1, 1)),
            activations=block["activations"],
            reduction=sm["reduction"] * block["reduction_multiplier"],
            init_a=sm["init_a"],
            init_b=sm["init_b"],
            init_a_out=sm["init_a_out"],
            name=f"block{index}",
        )(x)
    x = keras.layers.ReLU(6.0, name="features_relu6")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Activation("hard_swish", name="pool_hswish")(x)
        x = keras.layers.Dense(cfg["head_channels"], kernel_initializer=dense_initializer(), name="head_fc")(x)
        x = batchnorm(name="head_bn")(x)
        x = keras.layers.Activation("hard_swish", name="head_hswish")(x)
        x = keras.layers.Dropout(dropout_rate, name="head_dropout")(x)
        x = keras.layers.Dense(classes, kernel_initializer=dense_initializer(), name="logits_fc")(x)
        x = batchnorm(name="logits_bn")(x)
        x = keras.layers.Activation("hard_swish", name="logits_hswish")(x)
    return finish_application(
        inputs,
        x,
        model_name=model_name,
        name=name,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        weights=weights,
        official_loader=load_micronet_checkpoint,
    )


def official_layer_prefixes(model: keras.Model) -> list[tuple[keras.layers.Layer, str]]:
    """(layer, PyTorch key prefix) for every weighted layer of a MicroNet built by :func:`MicroNet`."""
    prefixes = {
        "stem": "features.0.",
        "head_fc": "classifier.0.linear.0.",
        "head_bn": "classifier.0.linear.1.",
        "logits_fc": "classifier.2.linear.0.",
        "logits_bn": "classifier.2.linear.1.",
    }
    pairs = []
    for layer in model.layers:
        if layer.name.startswith("block"):
            pairs.append((layer, f"features.{int(layer.name[5:])}."))
        elif layer.name in prefixes:
            pairs.append((layer, prefixes[layer.name]))
    return pairs


def load_micronet_checkpoint(model: keras.Model, path: str, include_top: bool = True) -> None:
    """Load an official MicroNet checkpoint (raw state dict or ``{'state_dict': …}``, ``module.``
    prefixes allowed, zip or legacy format) into ``model``; the head is skipped without a top."""
    load_official_checkpoint(path, official_layer_prefixes(model), ignore_prefixes=() if include_top else HEAD_PREFIXES)


BUILDERS = register_family(
    "micronet",
    MicroNet,
    load_config("micronet")["models"],
    describe=lambda name, _: f"MicroNet-{name[-2:].upper()} (thesis ch. 4), official configuration",
    function_name=lambda name: "MicroNet" + name[-2:].upper(),
    summary=lambda name, config: f"{name.replace('_', '-')} (official `{config['official_config']}`)",
)
# keras.applications-style functions, as keras.applications.MobileNetV3Small
MicroNetM0, MicroNetM1, MicroNetM2, MicroNetM3 = (BUILDERS[f"micronet_m{i}"] for i in range(4))
