"""Dynamic Residual Transfer networks (thesis ch. 6) and CovNorm adapters on a frozen
backbone (thesis ch. 2). Configurations: ``zoo_configs/drt.json``.

* ``drt_resnet50`` / ``drt_resnet101``: torchvision bottleneck ResNets whose every 3×3 conv carries a
  dynamic residual with coefficients from the block input (the authors' ``BottleneckKDRA``; their key
  names, so a converted DRT backbone loads);
* ``drt_lenet``: a digit-style LeNet with a dynamic residual on every conv (Digit-five, §6.4);
  ``drt_lenet_static`` is the same network without it (the static-transfer baseline).

:func:`insert_adapters` puts :class:`~dynzoo.layers.covnorm.CovNormAdapter` layers after chosen layers of a
(frozen, shared) backbone — the multi-domain setting of ch. 2.

Paper: Y. Li, L. Yuan, Y. Chen, P. Wang, N. Vasconcelos, "Dynamic Transfer for Multi-Source Domain
Adaptation", CVPR 2021, https://arxiv.org/abs/2103.10583;
chapter 6 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.

Paper: Y. Li, N. Vasconcelos, "Efficient Multi-Domain Learning by Covariance Normalization", CVPR 2019,
https://doi.org/10.1109/CVPR.2019.00557;
chapter 2 of Y. Li, "Dynamic Neural Networks for Resource Constrained Image Recognition", PhD thesis,
UC San Diego, 2021.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from dynzoo.config import load_config
from dynzoo.layers.base import (
    PACKAGE,
    batchnorm,
    channels_of,
    check_choice,
    check_int,
    conv_initializer,
)
from dynzoo.layers.conv import SymmetricConv2D
from dynzoo.layers.covnorm import (
    CovNormAdapter,
    covnorm_weights,
    feature_statistics,
    pca,
)
from dynzoo.layers.residual_transfer import RESIDUALS, DynamicResidualConv2D
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    register_family,
)
from dynzoo.models.resnet import STAGE_PLANES, ResNetBlock, resnet_stem

RESIDUAL_CHOICES = (*RESIDUALS, "none")


@keras.saving.register_keras_serializable(package=PACKAGE)
class DRTBottleneck(ResNetBlock):
    """ResNet bottleneck whose 3×3 conv is a :class:`DynamicResidualConv2D` driven by the block input
    (thesis §6.3 applied as in the authors' ``BottleneckKDRA``): ``u = ReLU(BN1(conv1(x)))``,
    ``v = ReLU(BN2(W0 * u + ΔW(x) * u))``, then conv3, BN3, shortcut and ReLU as a standard bottleneck.

    Args:
        planes: bottleneck width (output 4·planes).
        strides: 1 or 2 (on the 3×3 and the basis kernels).
        residual: "routing", "attention", "combined" or "none" (a static bottleneck).
        num_bases: K basis kernels (routing).
        basis_kernel_size: k of the basis kernels (1 in the code).
        reduction: width of the coefficient branch's FC1, C_in // reduction.

    Input/output: (B, H, W, C_in) → (B, H/s, W/s, 4·planes).
    """

    def __init__(
        self,
        planes: int,
        strides: int = 1,
        residual: str = "routing",
        num_bases: int = 4,
        basis_kernel_size: int = 1,
        reduction: int = 16,
        **kwargs,
    ):
        kwargs.pop("bottleneck", None)
        kwargs.pop("conv", None)
        super().__init__(planes, strides, bottleneck=True, conv="static", **kwargs)
        self.residual = check_choice("residual", residual, RESIDUAL_CHOICES)
        self.num_bases = check_int("num_bases", num_bases)
        self.basis_kernel_size = check_int("basis_kernel_size", basis_kernel_size)
        self.reduction = check_int("reduction", reduction)

    def build(self, input_shape):
        self.block_channels = channels_of(input_shape, "DRTBottleneck")
        super().build(input_shape)

    def _conv(self, cin, filters, kernel, strides, name):
        if kernel != 3 or self.residual == "none":
            return super()._conv(cin, filters, kernel, strides, name)
        conv = DynamicResidualConv2D(
            filters,
            3,
            strides,
            residual=self.residual,
            num_bases=self.num_bases,
            basis_kernel_size=self.basis_kernel_size,
            reduction=self.reduction,
            name=name,
        )
        conv.build([(None, None, None, cin), (None, None, None, self.block_channels)])
        return conv

    def call(self, inputs, training=None):
        x = inputs
        for n, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=False)):
            y = conv([x, inputs]) if isinstance(conv, DynamicResidualConv2D) else conv(x)
            x = bn(y, training=training)
            if n < len(self.convs) - 1:
                x = keras.ops.relu(x)
        shortcut = inputs
        if self.downsample:
            shortcut = self.downsample[1](self.downsample[0](inputs), training=training)
        return keras.ops.relu(x + shortcut)

    def official_children(self):
        children = []
        for name, child in super().official_children():
            if isinstance(child, DynamicResidualConv2D):  # the code keeps fc and conv_s* on the block
                children += [(name if sub == "conv" else sub, layer) for sub, layer in child.official_children()]
            else:
                children.append((name, child))
        return children

    def get_config(self):
        config = super().get_config()
        for key in ("bottleneck", "conv"):
            config.pop(key)
        return {
            **config,
            "residual": self.residual,
            "num_bases": self.num_bases,
            "basis_kernel_size": self.basis_kernel_size,
            "reduction": self.reduction,
        }


def _resnet_trunk(x, cfg):
    x = resnet_stem(x)
    for stage, (planes, blocks) in enumerate(zip(STAGE_PLANES, cfg["layers"], strict=False), start=1):
        for index in range(blocks):
            strides = 2 if stage > 1 and index == 0 else 1
            x = DRTBottleneck(
                planes,
                strides,
                cfg["residual"],
                cfg["num_bases"],
                cfg["basis_kernel_size"],
                cfg["reduction"],
                name=f"layer{stage}_{index}",
            )(x)
    return x


def _lenet_trunk(x, cfg):
    k = cfg["conv_kernel_size"]
    for i, filters in enumerate(cfg["conv_filters"], start=1):
        if cfg["residual"] == "none":
            conv = SymmetricConv2D(filters, k, use_bias=False, kernel_initializer=conv_initializer(), name=f"conv{i}")
        else:
            conv = DynamicResidualConv2D(
                filters,
                k,
                residual=cfg["residual"],
                num_bases=cfg["num_bases"],
                basis_kernel_size=cfg["basis_kernel_size"],
                reduction=cfg["reduction"],
                name=f"conv{i}",
            )
        x = batchnorm(f"bn{i}")(conv(x))
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(cfg["dense_units"], use_bias=False, name="fc1")(x)
    x = batchnorm("bn_fc1")(x)
    return keras.layers.ReLU(name="features")(x)


def DRT(
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
    """Build a DRT network of ``zoo_configs/drt.json`` (``drt_resnet50``, ``drt_resnet101``, ``drt_lenet``,
    ``drt_lenet_static``).

    Args:
        input_shape: (H, W, C), C=3 with weights; ResNets: at least 32 or None, default 224; LeNets: a fixed
            size of at least 16 (they flatten their last map; 28 for MNIST-size digits), default 32.
        include_top: keep the classifier (Dropout → Dense).
        weights: None, a Keras ``.weights.h5`` file, or (ResNets) an authors' DRT checkpoint (``.pth``;
            the backbone ``state_dict_G``, ``module.``/``features.`` prefixes accepted; the two MCD heads
            are not part of this model, so it loads with ``include_top=False``).
        input_tensor: optional Keras tensor to build on.
        pooling: with ``include_top=False``: ResNets: None (the last feature map), "avg" or "max"; LeNets
            end in flat features, which every choice returns.
        classes: number of classes of the top.
        classifier_activation: applied to the logits; None returns the logits.
        include_preprocessing: the model takes RGB in [0, 255] and applies the ImageNet mean/std.
        dropout_rate: dropout before the classifier; default the configuration's.
        name: model name; default ``model_name``.
    """
    models = load_config("drt")["models"]
    if model_name not in models:
        raise ValueError(f"`model_name` must be one of {sorted(models)}, got {model_name!r}.")
    cfg = models[model_name]
    lenet = cfg["arch"] == "lenet"
    height, width, chans = check_application_args(
        model_name=model_name,
        input_shape=input_shape,
        input_tensor=input_tensor,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
        default_size=cfg["default_size"],
        min_size=16 if lenet else 32,
    )
    if lenet and (height is None or width is None):
        raise ValueError(
            f"{model_name} flattens its last feature map: `input_shape` needs a fixed height and "
            f"width, got {(height, width, chans)}."
        )
    dropout_rate = cfg["dropout"] if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}.")

    inputs, x = model_input((height, width, chans), input_tensor)
    if include_preprocessing:
        x = imagenet_preprocessing(chans)(x)
    x = _lenet_trunk(x, cfg) if lenet else _resnet_trunk(x, cfg)
    if include_top:
        if not lenet:
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        x = keras.layers.Dense(classes, name="classifier")(x)
    # A LeNet's trunk ends in flat features, which "avg"/"max" pooling would leave as they are.
    return finish_application(
        inputs,
        x,
        model_name=model_name,
        name=name,
        include_top=include_top,
        pooling=None if lenet else pooling,
        classifier_activation=classifier_activation,
        weights=weights,
        official_loader=load_drt_checkpoint,
    )


def official_layer_prefixes(model: keras.Model) -> list:
    """(layer, key prefix) of the authors' DRT backbone (torchvision names) for every weighted layer."""
    pairs = []
    for layer in model.layers:
        if layer.name.startswith("layer"):
            stage, index = layer.name[5:].split("_")
            pairs.append((layer, f"layer{stage}.{index}."))
        elif layer.name in ("conv1", "bn1"):
            pairs.append((layer, f"{layer.name}."))
    return pairs


def load_drt_checkpoint(model: keras.Model, path: str, include_top: bool = True) -> None:
    """Load the backbone of an authors' DRT ResNet checkpoint (``state_dict_G`` or a bare state dict)."""
    from dynzoo.weights.convert import assign_state_dict, model_targets
    from dynzoo.weights.pth import load_pth, state_dict_from

    if include_top:
        raise ValueError(
            "DRT checkpoints hold a backbone and two MCD heads, not this model's classifier: "
            "build with `include_top=False`."
        )
    if not any(layer.name.startswith("layer") for layer in model.layers):
        raise ValueError("official DRT checkpoints exist only for the ResNet models.")
    raw = load_pth(path)
    state = state_dict_from(
        raw, key="state_dict_G" if isinstance(raw, dict) and "state_dict_G" in raw else "state_dict"
    )
    state = {(k.removeprefix("features.")): v for k, v in state.items()}
    assign_state_dict(
        model_targets(official_layer_prefixes(model)), state, source=os.fspath(path), ignore_prefixes=("fc.",)
    )


def insert_adapters(
    backbone: keras.Model, after: Sequence[str], adapters: dict | None = None, name: str | None = None
) -> keras.Model:
    """A model that runs ``backbone`` (its layers and weights shared, not copied) with a
    :class:`CovNormAdapter` after each layer named in ``after``.

    Args:
        backbone: a functional model; freeze it (``backbone.trainable = False``) to train adapters only.
        after: names of the layers whose output is adapted (e.g. the ReLUs after each conv).
        adapters: layer name → the adapter to use there; default a new full residual adapter
            (``CovNormAdapter()``, step 1 of Algorithm 1) named ``adapter_<layer>``.
        name: name of the new model.
    """
    names = {layer.name for layer in backbone.layers}
    unknown = [n for n in after if n not in names]
    if unknown:
        raise ValueError(f"`after`: no layer named {unknown} in {backbone.name}; layers: {sorted(names)}.")
    adapters = dict(adapters or {})
    for layer_name in after:
        adapters.setdefault(layer_name, CovNormAdapter(name=f"adapter_{layer_name}"))

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        return adapters[layer.name](out) if layer.name in adapters else out

    model = keras.models.clone_model(backbone, clone_function=lambda layer: layer, call_function=call)
    return keras.Model(model.inputs, model.outputs, name=name or f"{backbone.name}_adapted")


def task_batchnorms(backbone: keras.Model, name: str | None = None) -> keras.Model:
    """A model that runs ``backbone`` with its own trainable copy of every BatchNormalization layer
    (weights copied) and every other layer shared: per-task BatchNorm statistics and affine terms, as in the
    residual adapters of Rebuffi et al. (the thesis's [17]), re-estimated on the task while the shared
    layers stay frozen. The copies are task-specific parameters (4 per channel each)."""
    copies = {}

    def clone(layer):
        if not isinstance(layer, keras.layers.BatchNormalization):
            return layer
        copy = layer.__class__.from_config({**layer.get_config(), "trainable": True})
        copies[layer.name] = (layer, copy)
        return copy

    model = keras.models.clone_model(backbone, clone_function=clone)
    for layer, copy in copies.values():
        copy.set_weights(layer.get_weights())
        copy.trainable = True
    return keras.Model(model.inputs, model.outputs, name=name or f"{backbone.name}_task_bn")


def task_batchnorm_parameters(model: keras.Model) -> int:
    """Parameters of the trainable BatchNormalization layers directly in ``model`` (see
    :func:`task_batchnorms`), statistics included."""
    return sum(
        layer.count_params()
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    )


def adapter_statistics(model: keras.Model, adapters: Sequence[CovNormAdapter], images, batch_size: int = 256):
    """(input statistics, output statistics) of every adapter's transfer term A on ``images``, inference
    mode: step 2 of Algorithm 1 (every spatial position is a sample)."""
    probe = keras.Model(model.inputs, [adapter.input for adapter in adapters])
    inputs = probe.predict(np.asarray(images, "float32"), batch_size=batch_size, verbose=0)
    inputs = inputs if isinstance(inputs, list) else [inputs]
    stats = []
    for adapter, x in zip(adapters, inputs, strict=False):
        u, y = adapter.transfer_terms(x, training=False)
        stats.append(
            (feature_statistics(keras.ops.convert_to_numpy(u)), feature_statistics(keras.ops.convert_to_numpy(y)))
        )
    return stats


def covnorm_adapters(
    adapters: Sequence[CovNormAdapter], stats, threshold: float = 0.99, pcas: Sequence | None = None
) -> list[CovNormAdapter]:
    """Steps 2–3 of Algorithm 1: a CovNorm adapter for each fine-tuned full adapter, with PCAs keeping a
    fraction ``threshold`` of the variance of its inputs and outputs (``stats`` from
    :func:`adapter_statistics`), or the given ``pcas`` (``[(input PCA, output PCA), …]``: the joint variant's
    global PCAs, see :func:`~dynzoo.layers.covnorm.merge_statistics`). M starts at A seen through the PCAs;
    the BatchNorms are copied."""
    for name, given in (("stats", stats), ("pcas", pcas)):
        if given is not None and len(given) != len(adapters):
            raise ValueError(f"`{name}` must have one entry per adapter ({len(adapters)}), got {len(given)}.")
    out = []
    for i, (adapter, (stats_in, stats_out)) in enumerate(zip(adapters, stats, strict=False)):
        if adapter.is_covnorm:
            raise ValueError(f"{adapter.name} is already a CovNorm adapter; pass the fine-tuned full adapters.")
        pca_in, pca_out = pcas[i] if pcas is not None else (pca(stats_in, threshold), pca(stats_out, threshold))
        new = CovNormAdapter(len(pca_in.components), len(pca_out.components), name=adapter.name)
        new.build((None, adapter.channels))
        mini, mini_bias = covnorm_weights(
            keras.ops.convert_to_numpy(adapter.kernel), keras.ops.convert_to_numpy(adapter.bias), pca_in, pca_out
        )
        new.set_covnorm(pca_in, pca_out, mini, mini_bias)
        for ours, theirs in ((new.bn1, adapter.bn1), (new.bn2, adapter.bn2)):
            ours.set_weights(theirs.get_weights())
        out.append(new)
    return out


def _description(name: str, config: Mapping[str, Any]) -> str:
    if config["residual"] == "none":
        return "static LeNet (static-transfer baseline), thesis ch. 6"
    arch = "LeNet" if config["arch"] == "lenet" else "ResNet-" + name.rsplit("resnet", 1)[1]
    return f"DRT-{arch} ({config['residual']}), thesis ch. 6"


BUILDERS = register_family("drt", DRT, load_config("drt")["models"], _description)
