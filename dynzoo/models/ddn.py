"""Domain-aware dynamic networks (DDN, arXiv 1911.13237) as classifiers: MobileNetV2 and the FBNet
"default" trunk with every backbone conv a :class:`~dynzoo.layers.domain.DomainAwareConv2D`.

A DDN model takes ``[images, domain_embedding]``; :func:`dynzoo.models.bake.bake_domain` folds it, for
one domain, into its static twin (``static_model`` of ``zoo_configs/ddn.json``): the same layers, names
and ops as the plain network. Configurations: ``zoo_configs/ddn.json``.

Paper: T. Zhang, X. Wang, K. Keutzer, B. Wu, J. E. Gonzalez, "Domain-Aware Dynamic Networks", 2019,
https://arxiv.org/abs/1911.13237.
"""

from __future__ import annotations

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
    make_divisible,
)
from dynzoo.layers.conv import SymmetricConv2D, SymmetricDepthwiseConv2D
from dynzoo.layers.domain import DomainAwareConv2D
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    no_official_checkpoint,
    register_family,
)
from dynzoo.models.mobilenetv2 import InvertedResidual, channels
from dynzoo.registry import create_model

BACKBONES = ("mobilenetv2", "fbnet")
EMBEDDING_INPUT = "domain_embedding"


@keras.saving.register_keras_serializable(package="dynzoo")
class FBNetBlock(SequenceBlock):
    """FBNet IRF block as in the maskrcnn-benchmark FBNet trunk (paper §4.1's backbone): PW 1×1 (C_in → mid, mid =
    C_in·t rounded to a multiple of 8) → BN → ReLU → DW 3×3 (stride; no BN, no ReLU) → PW 1×1 (→ filters)
    → BN; identity skip when the stride is 1 and C_in = filters. The expanding PW exists even for t = 1.

    Args:
        filters: output channels.
        strides: depthwise stride (1 or 2).
        expansion: t ≥ 1.
    """

    def __init__(self, filters: int, strides: int = 1, expansion: int = 6, **kwargs):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.strides = check_choice("strides", strides, (1, 2))
        self.expansion = check_int("expansion", expansion)

    def make_steps(self, in_channels):
        mid = make_divisible(in_channels * self.expansion, 8)
        return [
            (None, keras.layers.Conv2D(mid, 1, use_bias=False, kernel_initializer=conv_initializer())),
            (None, batchnorm()),
            (None, keras.layers.ReLU()),
            (None, SymmetricDepthwiseConv2D(3, self.strides, use_bias=False, depthwise_initializer=conv_initializer())),
            (None, keras.layers.Conv2D(self.filters, 1, use_bias=False, kernel_initializer=conv_initializer())),
            (None, batchnorm()),
        ]

    def uses_residual(self, in_channels):
        return self.strides == 1 and in_channels == self.filters

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides, "expansion": self.expansion}


@keras.saving.register_keras_serializable(package="dynzoo")
class DomainAwareBlock(keras.layers.Layer):
    """The inverted residual block of ``backbone`` with every conv domain-aware (DDN §3.1): the same steps
    as :class:`~dynzoo.models.mobilenetv2.InvertedResidual` (``"mobilenetv2"``) or :class:`FBNetBlock`
    (``"fbnet"``), the convs replaced by :class:`DomainAwareConv2D` with K experts.

    Args:
        filters: output channels.
        strides: depthwise stride (1 or 2).
        expansion: t ≥ 1.
        experts: K ≥ 1.
        backbone: "mobilenetv2" or "fbnet".

    Inputs ``[x (B, H, W, C_in), embedding (B, D)]`` → (B, H/s, W/s, filters). :meth:`fold` gives the
    static block for one domain.
    """

    def __init__(
        self,
        filters: int,
        strides: int = 1,
        expansion: int = 6,
        experts: int = 2,
        backbone: str = "mobilenetv2",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = check_int("filters", filters)
        self.strides = check_choice("strides", strides, (1, 2))
        self.expansion = check_int("expansion", expansion)
        self.experts = check_int("experts", experts)
        self.backbone = check_choice("backbone", backbone, BACKBONES)

    def static_block(self) -> SequenceBlock:
        """The static block with this block's structure (unbuilt), named like it."""
        if self.backbone == "fbnet":
            return FBNetBlock(self.filters, self.strides, self.expansion, name=self.name)
        return InvertedResidual(self.filters, self.strides, self.expansion, conv="static", name=self.name)

    def build(self, input_shape):
        x_shape, e_shape = (tuple(s) for s in input_shape)
        self.x_shape = x_shape
        template = self.static_block()
        template.build(x_shape)  # the static twin's steps, so both stay the same by construction
        self.residual = template.residual
        self.steps = [self._domain_aware(step, f"step{i}") for i, step in enumerate(template.steps)]
        shape = x_shape
        for step in self.steps:
            step.build([shape, e_shape] if isinstance(step, DomainAwareConv2D) else shape)
            shape = tuple(step.compute_output_shape([shape, e_shape] if isinstance(step, DomainAwareConv2D) else shape))

    def _domain_aware(self, layer, name):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            return DomainAwareConv2D(
                None, layer.kernel_size[0], layer.requested_strides[0], self.experts, kind="depthwise", name=name
            )
        if isinstance(layer, keras.layers.Conv2D):
            return DomainAwareConv2D(layer.filters, layer.kernel_size[0], 1, self.experts, name=name)
        return type(layer).from_config({**layer.get_config(), "name": name})

    def call(self, inputs, training=None):
        x, embedding = inputs
        y = x
        for step in self.steps:
            y = step([y, embedding]) if isinstance(step, DomainAwareConv2D) else step(y, training=training)
        return y + x if self.residual else y

    def fold(self, embedding) -> SequenceBlock:
        """The static block equal to this one for the domain ``embedding`` (D,), weights copied."""
        block = self.static_block()
        block.build(self.x_shape)
        for static, step in zip(block.steps, self.steps, strict=False):
            source = step.fold(embedding) if isinstance(step, DomainAwareConv2D) else step
            static.set_weights(source.get_weights())
        return block

    def compute_output_shape(self, input_shape):
        return self.static_block().compute_output_shape(tuple(input_shape[0]))

    def compute_madds(self, input_shape) -> int:
        from dynzoo.layers.base import count_madds

        x_shape, e_shape = (tuple(s) for s in input_shape)
        if not self.built:
            self.build([x_shape, e_shape])
        total, shape = 0, x_shape
        for step in self.steps:
            arg = [shape, e_shape] if isinstance(step, DomainAwareConv2D) else shape
            total += count_madds(step, arg)
            shape = tuple(step.compute_output_shape(arg))
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "strides": self.strides,
            "expansion": self.expansion,
            "experts": self.experts,
            "backbone": self.backbone,
        }


def ddn_config(model_name: str) -> dict:
    models = load_config("ddn")["models"]
    if model_name not in models:
        raise ValueError(f"`model_name` must be one of {sorted(models)}, got {model_name!r}.")
    return models[model_name]


def DDN(
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
    embedding_dim: int | None = None,
) -> keras.Model:
    """Build a model of ``zoo_configs/ddn.json``: a DDN (inputs ``[images, domain_embedding]``) or its
    static FBNet twin (``fbnet_default``, images only).

    Args:
        input_shape: (H, W, 3), H and W multiples of 32; default (224, 224, 3).
        include_top: keep the classifier (GAP → Dropout → Dense, static).
        weights: None or a Keras ``.weights.h5`` file (no released DDN checkpoints exist).
        input_tensor: optional Keras tensor for the images.
        pooling: with ``include_top=False``: None, "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: applied to the logits; None returns the logits.
        include_preprocessing: the model takes RGB in [0, 255] and applies the ImageNet mean/std.
        dropout_rate: dropout before the classifier; default the config's.
        name: model name; default ``model_name``.
        embedding_dim: D, the length of the domain embedding input; default the config's (1280).
    """
    root = load_config("ddn")
    cfg = ddn_config(model_name)
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
    experts = cfg["experts"]
    embedding_dim = check_int("embedding_dim", embedding_dim or root["embedding_dim"])
    fbnet = cfg["backbone"] == "fbnet"
    alpha = cfg["width"]
    act = (lambda n: keras.layers.ReLU(name=n)) if fbnet else (lambda n: keras.layers.ReLU(6.0, name=n))
    suffix = "relu" if fbnet else "relu6"

    inputs, x = model_input((height, width, chans), input_tensor)
    embedding = keras.Input((embedding_dim,), name=EMBEDDING_INPUT) if experts else None

    def conv(filters, kernel, stride, layer_name):
        if experts:
            return lambda t: DomainAwareConv2D(filters, kernel, stride, experts, name=layer_name)([t, embedding])
        if kernel == 1:
            return keras.layers.Conv2D(
                filters, 1, use_bias=False, kernel_initializer=conv_initializer(), name=layer_name
            )
        return SymmetricConv2D(
            filters, kernel, stride, use_bias=False, kernel_initializer=conv_initializer(), name=layer_name
        )

    if include_preprocessing:
        x = imagenet_preprocessing(chans)(x)
    x = conv(channels(32 * alpha), 3, 2, "stem_conv")(x)
    x = batchnorm("stem_bn")(x)
    x = act(f"stem_{suffix}")(x)
    rows = root["fbnet_blocks"] if fbnet else load_config("mobilenetv2")["blocks"]
    index = 1
    for row in rows:
        for repeat in range(row["repeats"]):
            filters, stride = channels(row["filters"] * alpha), row["stride"] if repeat == 0 else 1
            if experts:
                x = DomainAwareBlock(filters, stride, row["expansion"], experts, cfg["backbone"], name=f"block{index}")(
                    [x, embedding]
                )
            elif fbnet:
                x = FBNetBlock(filters, stride, row["expansion"], name=f"block{index}")(x)
            else:
                x = InvertedResidual(filters, stride, row["expansion"], name=f"block{index}")(x)
            index += 1
    last = root["fbnet_head_channels"] if fbnet else (1280 if alpha <= 1.0 else channels(1280 * alpha))
    x = conv(last, 1, 1, "head_conv")(x)
    x = batchnorm("head_bn")(x)
    x = act(f"head_{suffix}")(x)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        x = keras.layers.Dense(classes, kernel_initializer=dense_initializer(), name="classifier")(x)
    model_inputs = [inputs, embedding] if experts else inputs
    return finish_application(
        model_inputs,
        x,
        model_name=model_name,
        name=name,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        weights=weights,
        official_loader=no_official_checkpoint("DDN"),
    )


def domain_feature_extractor(
    extractor: str | keras.Model = "mobilenetv2_035", input_size: int = 32, weights: str | None = None, seed: int = 0
) -> keras.Model:
    """A frozen image → (B, D) feature model: a registered zoo model (or a Keras backbone) with global
    average pooling, called in inference mode. A name builds ``create_model(name, include_top=False,
    pooling="avg", weights=weights)``; without weights the initialisation is fixed by ``seed`` (the
    random-feature deviation of the offline benchmark, see ``docs/models/ddn.md``)."""
    if isinstance(extractor, str):
        keras.utils.set_random_seed(seed)
        extractor = create_model(
            extractor, input_shape=(input_size, input_size, 3), include_top=False, pooling="avg", weights=weights
        )
    if len(extractor.outputs) != 1 or len(extractor.outputs[0].shape) != 2:
        raise ValueError(f"`extractor` must output pooled (B, D) features, got {extractor.outputs}.")
    extractor.trainable = False
    return extractor


def is_domain_aware(model: keras.Model) -> bool:
    """The model takes a domain embedding input (a DDN)."""
    return any(t.name == EMBEDDING_INPUT for t in model.inputs) if isinstance(model.inputs, list) else False


def _description(_: str, config: Mapping[str, Any]) -> str:
    net = "FBNet default trunk" if config["backbone"] == "fbnet" else f"MobileNetV2 ×{config['width']}"
    return f"DDN {config['experts']}x {net} (domain-aware experts)" if config["experts"] else f"{net} (static)"


BUILDERS = register_family("ddn", DDN, load_config("ddn")["models"], _description)
