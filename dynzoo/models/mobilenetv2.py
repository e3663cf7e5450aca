"""MobileNetV2 and its dynamic versions of thesis Table 3.4: static, DCD (official ``mobilenetv2_dcd``
code, so the authors' checkpoints load), DY-Conv and CondConv. Configurations: ``zoo_configs/mobilenetv2.json``.

Paper: Y. Li et al., "Revisiting Dynamic Convolution via Matrix Decomposition", ICLR 2021,
https://arxiv.org/abs/2103.08756;
chapter 3 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.

Baselines: B. Yang et al., "CondConv: Conditionally Parameterized Convolutions for Efficient Inference",
NeurIPS 2019, https://arxiv.org/abs/1904.04971; Y. Chen et al., "Dynamic Convolution: Attention over
Convolution Kernels", CVPR 2020, https://arxiv.org/abs/1912.03458.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from dynzoo.config import load_config
from dynzoo.layers.base import (
    SequenceBlock,
    batchnorm,
    check_choice,
    check_int,
    conv_initializer,
    dense_initializer,
    fuses_into_previous,
    make_divisible,
    quant_point,
)
from dynzoo.layers.conv import SymmetricConv2D, SymmetricDepthwiseConv2D
from dynzoo.layers.dcd import (
    INFERENCE_FORMS,
    DCDConv2D,
    DCDDense,
    conv_bn,
    mobilenetv2_latent_dim,
    official_squeeze,
)
from dynzoo.layers.dynamic_conv import FORMULATIONS, DynamicConv2D
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    register_family,
)
from dynzoo.weights.convert import assign_state_dict, model_targets
from dynzoo.weights.pth import load_pth, state_dict_from

CONV_KINDS = ("static", "dcd", "dynamic")


def mobilenetv2_config(model_name: str) -> dict:
    return load_config("mobilenetv2")["models"][model_name]


def channels(value: float) -> int:
    """The official rounding of MobileNetV2 widths (multiples of 8, never 10% below ``value``)."""
    return make_divisible(value, 8)


def dynamic_conv(filters, kernel_size, strides, settings: dict, depthwise=False, use_bias=False, name=None):
    """A DynamicConv2D configured as DY-Conv or CondConv by ``settings`` (experts, routing,
    attention_reduction, formulation)."""
    return DynamicConv2D(
        filters,
        kernel_size,
        strides,
        experts=settings["experts"],
        routing=settings["routing"],
        reduction=settings["attention_reduction"],
        depthwise=depthwise,
        use_bias=use_bias,
        formulation=settings["formulation"],
        name=name,
    )


@keras.saving.register_keras_serializable(package="dynzoo")
class InvertedResidual(SequenceBlock):
    """MobileNetV2 inverted residual block (Sandler et al. 2018) with static, DCD or dynamic convs.

    t = 1: DW 3×3 → BN → ReLU6 → PW → BN. t > 1: PW (expand) → BN → ReLU6 → DW 3×3 (stride) → BN → ReLU6 →
    PW (project) → BN; identity skip when the stride is 1 and C_in = filters. With ``conv="dcd"`` the
    pointwise convs of t > 1 blocks are :class:`DCDConv2D` with the official code's L / pooling /
    squeeze rules (the code's ``DYModule``); with ``conv="dynamic"`` every conv is a :class:`DynamicConv2D`.

    Args:
        filters: output channels.
        strides: stride of the depthwise conv (1 or 2).
        expansion: t, hidden channels = round(C_in · t).
        conv: "static", "dcd" or "dynamic".
        fc_squeeze: DCD squeeze divisor (``fc_squeeze`` of the official code: 16 for ×1.0, 8 below).
        experts, routing, attention_reduction, formulation: DynamicConv2D settings (``conv="dynamic"``).
    """

    def __init__(
        self,
        filters: int,
        strides: int = 1,
        expansion: int = 6,
        conv: str = "static",
        fc_squeeze: int = 8,
        experts: int = 4,
        routing: str = "softmax",
        attention_reduction: int | None = 4,
        formulation: str = "branches",
        inference_form: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.strides = check_choice("strides", strides, (1, 2))
        self.expansion = check_int("expansion", expansion)
        self.conv = check_choice("conv", conv, CONV_KINDS)
        self.fc_squeeze = check_int("fc_squeeze", fc_squeeze)
        self.inference_form = check_choice("inference_form", inference_form, INFERENCE_FORMS)
        self.dynamic = {
            "experts": check_int("experts", experts),
            "routing": routing,
            "attention_reduction": attention_reduction,
            "formulation": check_choice("formulation", formulation, FORMULATIONS),
        }

    def _pointwise(self, cin: int, cout: int, dynamic: bool):
        if self.conv == "dcd" and dynamic:
            latent, pool_size = mobilenetv2_latent_dim(cin, cout)
            squeeze = official_squeeze(cin * pool_size**2, latent, self.fc_squeeze)
            return DCDConv2D(
                cout, latent_dim=latent, squeeze=squeeze, pool_size=pool_size, inference_form=self.inference_form
            )
        if self.conv == "dynamic":
            return dynamic_conv(cout, 1, 1, self.dynamic)
        return keras.layers.Conv2D(cout, 1, use_bias=False, kernel_initializer=conv_initializer())

    def _depthwise(self):
        if self.conv == "dynamic":
            return dynamic_conv(None, 3, self.strides, self.dynamic, depthwise=True)
        return SymmetricDepthwiseConv2D(3, self.strides, use_bias=False, depthwise_initializer=conv_initializer())

    def make_steps(self, in_channels):
        hidden = round(in_channels * self.expansion)
        relu6 = lambda: (None, keras.layers.ReLU(6.0))
        if self.expansion == 1:
            return [
                ("conv.0", self._depthwise()),
                ("conv.1", batchnorm()),
                relu6(),
                ("conv.3", self._pointwise(in_channels, self.filters, dynamic=False)),
                ("conv.4", batchnorm()),
            ]
        return [
            ("conv.0", self._pointwise(in_channels, hidden, dynamic=True)),
            ("conv.1", batchnorm()),
            relu6(),
            ("conv.3", self._depthwise()),
            ("conv.4", batchnorm()),
            relu6(),
            ("conv.6", self._pointwise(hidden, self.filters, dynamic=True)),
            ("conv.7", batchnorm()),
        ]

    def uses_residual(self, in_channels):
        return self.strides == 1 and in_channels == self.filters

    def call(self, inputs, training=None):
        x, steps = inputs, list(self.steps)
        while steps:
            layer = steps.pop(0)
            if isinstance(layer, DCDConv2D) and steps and isinstance(steps[0], keras.layers.BatchNormalization):
                x = conv_bn(layer, steps.pop(0), x, training)  # folds the BN at inference
            else:
                x = layer(x, training=training)
            if steps and not fuses_into_previous(steps[0]):
                x = quant_point(self, x, f"{layer.name}_out")
        return quant_point(self, x + inputs, "sum") if self.residual else x

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "expansion": self.expansion,
            "conv": self.conv,
            "fc_squeeze": self.fc_squeeze,
            "inference_form": self.inference_form,
            **self.dynamic,
        }


def MobileNetV2(
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
    formulation: str | None = None,
    inference_form: str = "auto",
) -> keras.Model:
    """Build a MobileNetV2 of ``zoo_configs/mobilenetv2.json`` (static, ``dcd_…``, ``dy_…``, ``condconv_…``).

    Args:
        input_shape: (H, W, 3), H and W multiples of 32; default (224, 224, 3). DCD models need a static
            size (their expanding layers pool 2×2).
        include_top: keep the classifier (GAP → Dropout → Dense; DCD: the dynamic ``DCDDense``; CondConv:
            a dynamic 8-expert classifier).
        weights: None, "imagenet", an official DCD checkpoint (``.pth``/``.pth.tar``; ``state_dict``
            wrapping and ``module.`` prefixes accepted) or a Keras ``.weights.h5`` file.
        input_tensor: optional Keras tensor to build on.
        pooling: with ``include_top=False``: None (the last feature map), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: applied to the logits; None returns the logits.
        include_preprocessing: the model takes RGB in [0, 255] and applies the ImageNet mean/std.
        dropout_rate: dropout before the classifier; default the model's training value.
        name: model name; default ``model_name``.
        formulation: DynamicConv2D formulation of DY-Conv/CondConv models ("branches" or "kernel");
            default the model's faster one on TFLite (``benchmarks/dcd_latency.py``).
        inference_form: DCDConv2D inference form of DCD models ("auto", "parallel" or "kernel").
    """
    models = load_config("mobilenetv2")["models"]
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
    formulation = check_choice("formulation", formulation or cfg.get("formulation", "branches"), FORMULATIONS)
    kind, alpha = cfg["conv"], cfg["width"]
    dynamic = {
        "experts": cfg.get("experts", 4),
        "routing": cfg.get("routing", "softmax"),
        "attention_reduction": cfg.get("attention_reduction", 4),
        "formulation": formulation,
    }

    inputs, x = model_input((height, width, chans), input_tensor)
    if include_preprocessing:
        x = imagenet_preprocessing(chans)(x)
    x = SymmetricConv2D(
        channels(32 * alpha), 3, 2, use_bias=False, kernel_initializer=conv_initializer(), name="stem_conv"
    )(x)
    x = batchnorm("stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu6")(x)
    index = 1
    for row in load_config("mobilenetv2")["blocks"]:
        for repeat in range(row["repeats"]):
            x = InvertedResidual(
                channels(row["filters"] * alpha),
                row["stride"] if repeat == 0 else 1,
                row["expansion"],
                conv=kind,
                fc_squeeze=cfg.get("fc_squeeze", 8),
                inference_form=inference_form,
                name=f"block{index}",
                **dynamic,
            )(x)
            index += 1
    last = 1280 if alpha <= 1.0 else channels(1280 * alpha)
    if cfg.get("dynamic_head_conv"):
        x = dynamic_conv(last, 1, 1, dynamic, name="head_conv")(x)
    else:
        x = keras.layers.Conv2D(last, 1, use_bias=False, kernel_initializer=conv_initializer(), name="head_conv")(x)
    x = batchnorm("head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu6")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        x = classifier(kind, classes, cfg, dynamic)(x)
    return finish_application(
        inputs,
        x,
        model_name=model_name,
        name=name,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        weights=weights,
        official_loader=load_mobilenetv2_checkpoint,
    )


def classifier(kind: str, classes: int, cfg: dict, dynamic: dict):
    """The top's last layer: Dense, the official DCD ``DYCls`` (L = squeeze = 32; L = classes below 32
    classes) or a CondConv FC."""
    if kind == "dcd":
        return DCDDense(classes, latent_dim=min(32, classes), squeeze=32, name="classifier")
    if kind == "dynamic" and cfg.get("dynamic_classifier"):
        return DynamicDense(classes, dynamic, name="classifier")
    return keras.layers.Dense(classes, kernel_initializer=dense_initializer(), name="classifier")


@keras.saving.register_keras_serializable(package="dynzoo")
class DynamicDense(keras.layers.Layer):
    """A mixture-of-experts fully connected layer (CondConv's classifier): a 1×1 DynamicConv2D with
    per-expert biases on the (B, 1, 1, C) view of the features. (B, C) → (B, units)."""

    def __init__(self, units: int, dynamic: dict, **kwargs):
        super().__init__(**kwargs)
        self.units, self.dynamic = units, dict(dynamic)
        self.conv = dynamic_conv(units, 1, 1, self.dynamic, use_bias=True, name="conv")

    def build(self, input_shape):
        self.conv.build((input_shape[0], 1, 1, input_shape[-1]))

    def call(self, inputs):
        return keras.ops.reshape(self.conv(keras.ops.reshape(inputs, (-1, 1, 1, inputs.shape[-1]))), (-1, self.units))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def compute_madds(self, input_shape) -> int:
        return self.conv.compute_madds((input_shape[0], 1, 1, input_shape[-1]))

    def get_config(self):
        return {**super().get_config(), "units": self.units, "dynamic": self.dynamic}


def official_layer_prefixes(model: keras.Model, classifier_prefix: str = "classifier.1.") -> list:
    """(layer, key prefix) of the official ``mobilenetv2_dcd`` state dict for every weighted layer."""
    prefixes = {
        "stem_conv": "features.0.0.",
        "stem_bn": "features.0.1.",
        "head_conv": "conv.0.",
        "head_bn": "conv.1.",
        "classifier": classifier_prefix,
    }
    pairs = []
    for layer in model.layers:
        if layer.name.startswith("block"):
            pairs.append((layer, f"features.{int(layer.name[5:])}."))
        elif layer.name in prefixes:
            pairs.append((layer, prefixes[layer.name]))
    return pairs


def load_official_dcd(
    model: keras.Model,
    path: str | os.PathLike,
    pairs_for,
    include_top: bool = True,
    rename: dict[str, str] | None = None,
) -> None:
    """Load an authors' DCD checkpoint: the classifier's index (``classifier.1`` when trained with dropout,
    ``classifier.0`` without) is read from the file; ``rename`` maps our sub-layer names to the family's
    (DCD-ResNet calls Q and P ``q`` / ``p``)."""
    state_dict = state_dict_from(load_pth(path))
    head = "classifier.0." if any(k.startswith("classifier.0.") for k in state_dict) else "classifier.1."
    targets = model_targets(pairs_for(model, head))
    for ours, theirs in (rename or {}).items():
        targets = {k.replace(ours, theirs): v for k, v in targets.items()}
    assign_state_dict(
        targets, state_dict, source=os.fspath(path), ignore_prefixes=() if include_top else ("classifier.",)
    )


def load_mobilenetv2_checkpoint(model: keras.Model, path: str, include_top: bool = True) -> None:
    """Load an official DCD-MobileNetV2 checkpoint (``mobilenetv2_dcd``) into ``model``."""
    load_official_dcd(model, path, official_layer_prefixes, include_top)


_DESCRIPTIONS = {
    "static": "MobileNetV2 ×{w} (static)",
    "dcd": "DCD-MobileNetV2 ×{w} (thesis ch. 3, official code)",
    "dynamic": "{kind}-MobileNetV2 ×{w} (baseline of thesis Table 3.4)",
}


def _description(_: str, config: Mapping[str, Any]) -> str:
    kind = "DY-Conv" if config.get("routing") == "softmax" else "CondConv"
    return _DESCRIPTIONS[config["conv"]].format(w=config["width"], kind=kind)


BUILDERS = register_family(
    "mobilenetv2",
    MobileNetV2,
    load_config("mobilenetv2")["models"],
    _description,
    summary=lambda name, c: f"{name} ({c['conv']} convs, width {c['width']})",
)
