"""Differentiable Dynamic Wirings (DDW: Yuan et al., ICCV 2021) over ResNet and MobileNetV2: every stage
of two or more blocks becomes a complete DAG of its blocks (:class:`~dynzoo.layers.wiring.WiredStage`, the
construction, one node per block, that reduces to the static network when only the chain edges are open), the
static-α ablation of Table 6, and the per-sample adjacency matrices. Configurations: ``zoo_configs/ddw.json``.

There is no RegNet in the zoo, so the paper's RegNetX-600M/1.6G variants are not built.

Paper: K. Yuan, Q. Li, S. Guo, D. Chen, A. Zhou, F. Yu, Z. Liu, "Differentiable Dynamic Wirings for Neural
Networks", ICCV 2021 (an earlier version: https://arxiv.org/abs/2010.01097).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from dynzoo.config import load_config
from dynzoo.layers.base import (
    batchnorm,
    check_choice,
    conv_initializer,
    dense_initializer,
)
from dynzoo.layers.conv import SymmetricConv2D
from dynzoo.layers.wiring import AGGREGATIONS, INFERENCE_GATES, WIRINGS, WiredStage
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    no_official_checkpoint,
    register_family,
)
from dynzoo.models.mobilenetv2 import InvertedResidual, channels
from dynzoo.models.resnet import STAGE_PLANES, ResNetBlock, resnet_stem

STATIC_ALPHA_SUFFIX = "_static_alpha"


def ddw_config(model_name: str) -> tuple[dict, str]:
    """(configuration, wiring) of a registered DDW name (``<name>_static_alpha``: the static-α ablation)."""
    models = load_config("ddw")["models"]
    base = model_name.removesuffix(STATIC_ALPHA_SUFFIX)
    if base not in models:
        names = sorted(models) + sorted(m + STATIC_ALPHA_SUFFIX for m in models)
        raise ValueError(f"`model_name` must be one of {names}, got {model_name!r}.")
    return models[base], "static" if base != model_name else "dynamic"


def DDW(
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
    *,
    wiring: str | None = None,
    inference_gate: str | None = None,
    aggregation: str = "adjacency",
    width: float = 1.0,
) -> keras.Model:
    """Build a DDW network of ``zoo_configs/ddw.json`` (``ddw_resnet18/50/101``, ``ddw_mobilenetv2_100``,
    ``ddw_resnet18_cifar`` for 32×32 inputs; ``<name>_static_alpha`` for the static-α ablation).

    Args:
        input_shape: (H, W, 3); default (224, 224, 3), (32, 32, 3) for ``ddw_resnet18_cifar``. H and W
            multiples of 32 (of 8 for the CIFAR stem).
        include_top: keep the classifier (GAP → Dropout → Dense).
        weights: None or Keras ``.weights.h5`` weights (no DDW checkpoint is published; start from a static
            network's weights with :func:`load_static_weights`).
        input_tensor: optional Keras tensor to build on.
        pooling: with ``include_top=False``: None (the last feature map), "avg" or "max".
        classes: number of classes of the top.
        classifier_activation: applied to the logits; None returns the logits.
        include_preprocessing: the model takes RGB in [0, 255] and applies the ImageNet mean/std.
        dropout_rate: dropout before the classifier; default the static network's.
        name: model name; default ``model_name``.
        wiring: "dynamic" (DDW), "static" (static-α ablation) or "chain" (the static network built from the
            same blocks); default the named model's.
        inference_gate: "consistent" (open edges keep α·σ(α − τ), as in training) or "paper" (open edges
            keep α); default ``zoo_configs/ddw.json``'s.
        aggregation: training-time form of the weighted sums, "adjacency" (memory-saving custom gradient),
            "stacked" (naive) or "edges"; the outputs are the same.
        width: channel multiplier (ResNet planes 64·width …; MobileNetV2 width), for small experiments.
    """
    cfg, default_wiring = ddw_config(model_name)
    router = load_config("ddw")["router"]
    wiring = check_choice("wiring", default_wiring if wiring is None else wiring, WIRINGS)
    inference_gate = check_choice("inference_gate", inference_gate or router["inference_gate"], INFERENCE_GATES)
    aggregation = check_choice("aggregation", aggregation, AGGREGATIONS)
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 4:
        raise ValueError(f"`width` must be a number in (0, 4], got {width!r}.")
    height, width_px, chans = check_application_args(
        model_name=model_name,
        input_shape=input_shape,
        input_tensor=input_tensor,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
        default_size=cfg["default_size"],
        min_size=cfg["min_size"],
    )
    dropout_rate = cfg["dropout"] if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}.")

    def wire(x, blocks, stage_name):
        if len(blocks) == 1:  # a stage of one block has no graph
            return blocks[0](x)
        stage = WiredStage(
            blocks,
            wiring,
            bias_init=router["bias_init"],
            threshold_init=router["threshold_init"],
            inference_gate=inference_gate,
            aggregation=aggregation,
            name=stage_name,
        )
        x = stage(x)[0]
        if router["zero_init_residual"]:
            # each node with a shortcut starts as the plain weighted sum of its inputs (bias +3: edges open); a block
            # without one (MobileNetV2's first of a stage) would output zeros and pass back no gradient
            for block in blocks:
                if isinstance(block, ResNetBlock):
                    last_bn = block.bns[-1]
                elif block.residual:
                    last_bn = block.steps[-1]
                else:
                    continue
                last_bn.gamma.assign(np.zeros(last_bn.gamma.shape, "float32"))
        return x

    inputs, x = model_input((height, width_px, chans), input_tensor)
    if include_preprocessing:
        x = imagenet_preprocessing(chans)(x)
    if cfg["backbone"] == "resnet":
        x = _resnet_body(x, cfg, width, wire)
    else:
        x = _mobilenetv2_body(x, width, wire)
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
        initializer = dense_initializer() if cfg["backbone"] == "mobilenetv2" else "glorot_uniform"
        x = keras.layers.Dense(classes, kernel_initializer=initializer, name="classifier")(x)
    return finish_application(
        inputs,
        x,
        model_name=model_name,
        name=name,
        include_top=include_top,
        pooling=pooling,
        classifier_activation=classifier_activation,
        weights=weights,
        official_loader=no_official_checkpoint(
            "DDW", "pass Keras `.weights.h5` weights or copy a static network's with `load_static_weights`"
        ),
    )


def _resnet_body(x, cfg: dict, width: float, wire):
    """The torchvision ResNet (``ResNetBlock``, same layer names as :mod:`dynzoo.models.resnet`), or the CIFAR
    stem (3×3/1 conv, no pooling) for small inputs; one graph per stage."""
    stem = max(1, round(64 * width))
    small = cfg["stem"] == "cifar"
    x = resnet_stem(x, stem, small_input=small, pool=not small)
    for stage, (planes, count) in enumerate(zip(STAGE_PLANES, cfg["layers"], strict=False), start=1):
        planes = max(1, round(planes * width))
        blocks = [
            ResNetBlock(
                planes, 2 if stage > 1 and index == 0 else 1, cfg["block"] == "bottleneck", name=f"layer{stage}_{index}"
            )
            for index in range(count)
        ]
        x = wire(x, blocks, f"layer{stage}")
    return x


def _mobilenetv2_body(x, alpha: float, wire):
    """MobileNetV2 (``InvertedResidual``, same layer names as :mod:`dynzoo.models.mobilenetv2`); one graph
    per block row of two or more blocks (5 graphs; the 16- and 320-channel rows have one block)."""
    x = SymmetricConv2D(
        channels(32 * alpha), 3, 2, use_bias=False, kernel_initializer=conv_initializer(), name="stem_conv"
    )(x)
    x = batchnorm("stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu6")(x)
    index = 1
    for row_index, row in enumerate(load_config("mobilenetv2")["blocks"], start=1):
        blocks = []
        for repeat in range(row["repeats"]):
            blocks.append(
                InvertedResidual(
                    channels(row["filters"] * alpha),
                    row["stride"] if repeat == 0 else 1,
                    row["expansion"],
                    name=f"block{index}",
                )
            )
            index += 1
        x = wire(x, blocks, f"graph{row_index}")
    last = 1280 if alpha <= 1.0 else channels(1280 * alpha)
    x = keras.layers.Conv2D(last, 1, use_bias=False, kernel_initializer=conv_initializer(), name="head_conv")(x)
    x = batchnorm("head_bn")(x)
    return keras.layers.ReLU(6.0, name="head_relu6")(x)


# ----------------------------------------------------------------------------------------------------
# Static weights, adjacency matrices.


def wired_stages(model: keras.Model) -> list[WiredStage]:
    """The graphs of a DDW model, in order."""
    stages = [layer for layer in model.layers if isinstance(layer, WiredStage)]
    if not stages:
        raise ValueError(f"`model` {model.name!r} has no wired stages (not a DDW network).")
    return stages


def load_static_weights(model: keras.Model, static: keras.Model) -> None:
    """Copy the weights of the static network ``static`` (e.g. ``dynzoo.create_model("resnet18")``) into the
    DDW network ``model`` built with the same input, width and classes: every layer of ``static`` goes to the
    layer of the same name (blocks inside the graphs included). Routers and thresholds are left as they are.
    """
    targets = {layer.name: layer for layer in model.layers if not isinstance(layer, WiredStage)}
    for stage in wired_stages(model):
        targets.update({block.name: block for block in stage.blocks})
    missing, mismatched = [], []
    for layer in static.layers:
        if not layer.weights:
            continue
        target = targets.get(layer.name)
        if target is None:
            missing.append(layer.name)
        elif [tuple(w.shape) for w in target.weights] != [tuple(w.shape) for w in layer.weights]:
            mismatched.append(layer.name)
        else:
            target.set_weights(layer.get_weights())
    if missing or mismatched:
        raise ValueError(
            f"`static` does not match `model`: layers missing in the DDW network {missing}, "
            f"layers of other shapes {mismatched}."
        )


def wiring_model(model: keras.Model) -> keras.Model:
    """A model sharing ``model``'s layers whose outputs are ``[y, adjacency of graph 1, graph 2, …]``: y is
    the model's output, each adjacency (B, N, N) holds the edge weights used per sample (``A[b, j, i]``: edge
    i → j; 0 = closed)."""
    adjacency = [stage.output[1] for stage in wired_stages(model)]
    return keras.Model(model.inputs, [model.outputs[0], *adjacency], name=f"{model.name}_wiring")


def adjacency_matrices(
    model: keras.Model, images: np.ndarray, batch_size: int = 64, wired: keras.Model | None = None
) -> dict[str, np.ndarray]:
    """Run ``model`` (inference mode) on ``images``; return ``{graph name: (N, nodes, nodes)}`` adjacency
    matrices and ``"outputs"``: the model's outputs. ``wired``: a :func:`wiring_model` built once by callers
    that analyse repeatedly."""
    wired = wiring_model(model) if wired is None else wired
    results = wired.predict(np.asarray(images), batch_size=batch_size, verbose=0)
    names = [stage.name for stage in wired_stages(model)]
    return {"outputs": results[0], **dict(zip(names, results[1:], strict=False))}


def _registered_models() -> dict[str, dict[str, Any]]:
    """Each DDW configuration, and its static-α ablation (``…_static_alpha``, compared with Table 6's figure)."""
    models = {}
    for name, config in load_config("ddw")["models"].items():
        reference = config["reference"]
        static = {"paper_top1": reference["static_alpha_top1"]} if "static_alpha_top1" in reference else {}
        models[name] = config
        models[name + STATIC_ALPHA_SUFFIX] = {**config, "reference": static}
    return models


def _description(name: str, config: Mapping[str, Any]) -> str:
    if config["backbone"] == "mobilenetv2":
        backbone = "MobileNetV2-1.0"
    else:
        depth = name.split("resnet")[1].split("_")[0]
        backbone = f"ResNet-{depth}" + (" (32×32 stem)" if config["stem"] == "cifar" else "")
    what = "static-α ablation of DDW" if name.endswith(STATIC_ALPHA_SUFFIX) else "DDW"
    return f"{what} {backbone} (Yuan et al., ICCV 2021)"


BUILDERS = register_family("ddw", DDW, _registered_models(), _description, summary=lambda name, _: f"{name} (DDW)")
