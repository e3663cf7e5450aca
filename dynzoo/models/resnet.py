"""ResNet-10/18/50 (torchvision layout) and DCD-ResNet (thesis ch. 3, official ``resnet_dcd`` code, so the
authors' checkpoints load). Configurations: ``zoo_configs/resnet.json``.

Paper: Y. Li et al., "Revisiting Dynamic Convolution via Matrix Decomposition", ICLR 2021,
https://arxiv.org/abs/2103.08756;
chapter 3 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras

from dynzoo.config import load_config
from dynzoo.layers.base import (
    PACKAGE,
    batchnorm,
    channels_of,
    check_choice,
    check_int,
    conv_initializer,
    count_madds,
)
from dynzoo.layers.conv import SymmetricConv2D
from dynzoo.layers.dcd import DCDConv2D, DCDDense, conv_bn, resnet_dcd_settings
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    register_family,
)
from dynzoo.models.mobilenetv2 import load_official_dcd

STAGE_PLANES = (64, 128, 256, 512)


def resnet_config(model_name: str) -> dict:
    return load_config("resnet")["models"][model_name]


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNetBlock(keras.layers.Layer):
    """ResNet BasicBlock (3×3 → 3×3) or Bottleneck (1×1 → 3×3 → 1×1, ×4 expansion, stride on the 3×3),
    with a 1×1-conv + BN shortcut when the shape changes; ReLU after each BN and after the addition.

    With ``conv="dcd"`` every conv of the block is a :class:`DCDConv2D` with the official rules
    (BasicBlock: ``conv_basic_dy``, 2×2 pooling, L = ⌊√(4·C_in)⌋; Bottleneck: ``conv_dy``, global
    pooling, L = ⌊√C_in⌋); the shortcut stays static.

    Args:
        planes: 64, 128, … (outputs: planes, or 4·planes for a bottleneck).
        strides: 1 or 2.
        bottleneck: Bottleneck instead of BasicBlock.
        conv: "static" or "dcd".

    Input/output: (B, H, W, C_in) → (B, H/s, W/s, planes·expansion).
    """

    def __init__(self, planes: int, strides: int = 1, bottleneck: bool = False, conv: str = "static", **kwargs):
        super().__init__(**kwargs)
        self.planes = check_int("planes", planes)
        self.strides = check_choice("strides", strides, (1, 2))
        self.bottleneck = bool(bottleneck)
        self.conv = check_choice("conv", conv, ("static", "dcd"))
        self.out_channels = planes * (4 if self.bottleneck else 1)

    def _conv(self, cin: int, filters: int, kernel: int, strides: int, name: str):
        if self.conv == "dcd":
            return DCDConv2D(filters, kernel, strides, name=name, **resnet_dcd_settings(cin, self.bottleneck))
        return SymmetricConv2D(
            filters, kernel, strides, use_bias=False, kernel_initializer=conv_initializer(), name=name
        )

    def build(self, input_shape):
        cin = channels_of(input_shape, "ResNetBlock")
        p, s = self.planes, self.strides
        if self.bottleneck:
            specs = [(cin, p, 1, 1), (p, p, 3, s), (p, self.out_channels, 1, 1)]
        else:
            specs = [(cin, p, 3, s), (p, p, 3, 1)]
        self.convs = [self._conv(i, o, k, st, f"conv{n}") for n, (i, o, k, st) in enumerate(specs, 1)]
        self.bns = [batchnorm(f"bn{n}") for n in range(1, len(specs) + 1)]
        self.downsample = None
        if s != 1 or cin != self.out_channels:
            self.downsample = [
                keras.layers.Conv2D(
                    self.out_channels,
                    1,
                    strides=s,
                    use_bias=False,
                    kernel_initializer=conv_initializer(),
                    name="downsample_conv",
                ),
                batchnorm("downsample_bn"),
            ]
        self._shapes = []
        shape = tuple(input_shape)
        for conv, bn in zip(self.convs, self.bns, strict=False):
            self._shapes.append(shape)
            conv.build(shape)
            shape = tuple(conv.compute_output_shape(shape))
            bn.build(shape)
        if self.downsample:
            self.downsample[0].build(tuple(input_shape))
            self.downsample[1].build(shape)

    def call(self, inputs, training=None):
        x = inputs
        for n, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=False)):
            x = conv_bn(conv, bn, x, training)
            if n < len(self.convs) - 1:
                x = keras.ops.relu(x)
        shortcut = inputs
        if self.downsample:
            shortcut = self.downsample[1](self.downsample[0](inputs), training=training)
        return keras.ops.relu(x + shortcut)

    def compute_output_shape(self, input_shape):
        h, w = ((n + self.strides - 1) // self.strides if n is not None else None for n in input_shape[1:3])
        return (input_shape[0], h, w, self.out_channels)

    def compute_madds(self, input_shape) -> int:
        if not self.built:
            self.build(input_shape)
        total = sum(count_madds(conv, shape) for conv, shape in zip(self.convs, self._shapes, strict=False))
        if self.downsample:
            total += count_madds(self.downsample[0], tuple(input_shape))
        return total

    def official_children(self):
        children = [(f"conv{n}", c) for n, c in enumerate(self.convs, 1)]
        children += [(f"bn{n}", b) for n, b in enumerate(self.bns, 1)]
        if self.downsample:
            children += [("downsample.0", self.downsample[0]), ("downsample.1", self.downsample[1])]
        return children

    def get_config(self):
        return {
            **super().get_config(),
            "planes": self.planes,
            "strides": self.strides,
            "bottleneck": self.bottleneck,
            "conv": self.conv,
        }


def resnet_stem(x, filters: int = 64, small_input: bool = False, pool: bool = True):
    """The torchvision ResNet stem, layers named as the official checkpoints (``conv1``, ``bn1``): a 7×7/2
    convolution → BN → ReLU → 3×3/2 max-pooling. ``small_input`` (CIFAR-style): a 3×3/1 convolution, and
    with ``pool`` a 2×2/2 max-pooling; ``pool=False`` leaves the pooling out."""
    x = SymmetricConv2D(
        filters,
        3 if small_input else 7,
        1 if small_input else 2,
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name="conv1",
    )(x)
    x = batchnorm("bn1")(x)
    x = keras.layers.ReLU(name="relu")(x)
    if not pool:
        return x
    if small_input:
        return keras.layers.MaxPooling2D(2, 2, name="maxpool")(x)
    # Zero padding equals PyTorch's −inf padding here: the inputs follow a ReLU.
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    return keras.layers.MaxPooling2D(3, 2, name="maxpool")(x)


def ResNet(
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
    """Build a ResNet of ``zoo_configs/resnet.json`` (``resnet10/18/50``, ``dcd_resnet10/18/50``).

    Args:
        input_shape: (H, W, 3), H and W multiples of 32; default (224, 224, 3). DCD-ResNet-10/18 need a
            static size (2×2 pooling). The official head's ``AvgPool2d(7)`` is a global average at 224.
        include_top: keep the classifier (GAP → Dropout → Dense, or the dynamic ``DCDDense``).
        weights: None, "imagenet", an official DCD checkpoint (``.pth``/``.pth.tar``; ``state_dict``
            wrapping and ``module.`` prefixes accepted) or a Keras ``.weights.h5`` file.
        input_tensor: optional Keras tensor to build on.
        pooling: with ``include_top=False``: None (the last feature map), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: applied to the logits; None returns the logits.
        include_preprocessing: the model takes RGB in [0, 255] and applies the ImageNet mean/std.
        dropout_rate: dropout before the classifier; default the model's training value.
        name: model name; default ``model_name``.
    """
    models = load_config("resnet")["models"]
    if model_name not in models:
        raise ValueError(f"`model_name` must be one of {sorted(models)}, got {model_name!r}.")
    cfg = models[model_name]
    height, width, chans = check_application_args(
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

    inputs, x = model_input((height, width, chans), input_tensor)
    if include_preprocessing:
        x = imagenet_preprocessing(chans)(x)
    x = resnet_stem(x)
    for stage, (planes, blocks) in enumerate(zip(STAGE_PLANES, cfg["layers"], strict=False), start=1):
        for index in range(blocks):
            strides = 2 if stage > 1 and index == 0 else 1
            x = ResNetBlock(planes, strides, cfg["block"] == "bottleneck", cfg["conv"], name=f"layer{stage}_{index}")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        if cfg["conv"] == "dcd":
            x = DCDDense(classes, latent_dim=min(32, classes), squeeze=32, name="classifier")(x)
        else:
            x = keras.layers.Dense(classes, name="classifier")(x)
    return finish_application(
        inputs,
        x,
        model_name=model_name,
        name=name,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        weights=weights,
        official_loader=load_resnet_checkpoint,
    )


def official_layer_prefixes(model: keras.Model, classifier_prefix: str = "classifier.0.") -> list:
    """(layer, key prefix) of the official ``resnet_dcd`` state dict (torchvision names) for every
    weighted layer."""
    prefixes = {"conv1": "conv1.", "bn1": "bn1.", "classifier": classifier_prefix}
    pairs = []
    for layer in model.layers:
        if layer.name.startswith("layer"):
            stage, index = layer.name[5:].split("_")
            pairs.append((layer, f"layer{stage}.{index}."))
        elif layer.name in prefixes:
            pairs.append((layer, prefixes[layer.name]))
    return pairs


def load_resnet_checkpoint(model: keras.Model, path: str, include_top: bool = True) -> None:
    """Load an official DCD-ResNet checkpoint (``resnet_dcd``) into ``model``."""
    load_official_dcd(model, path, official_layer_prefixes, include_top, rename={".conv_q.": ".q.", ".conv_p.": ".p."})


def _description(name: str, config: Mapping[str, Any]) -> str:
    depth = name.rsplit("resnet", 1)[1]
    return f"DCD-ResNet-{depth} (thesis ch. 3)" if config["conv"] == "dcd" else f"ResNet-{depth} (static)"


BUILDERS = register_family("resnet", ResNet, load_config("resnet")["models"], _description)
