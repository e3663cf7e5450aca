"""CDB-ResNets (Context-aware Dynamic Block, Su et al.): builders, per-sample gate analysis and
effective FLOPs, the training losses (category, execution rate, FLOPs ratio) and the ``dynzoo train`` hook.

Configurations: ``zoo_configs/cdb.json``. Every residual block is a :class:`~dynzoo.layers.cdb.CDBBlock`
whose controller passes its hidden state to the next block's controller.

Paper: Y. Su, S. Zhou, Y. Wu, X. Liu, T. Su, D. Liang, J. Yan (SenseTime Research), "Context-aware Dynamic
Block"; the copy we work from names no venue and no arXiv identifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from dynzoo.config import load_config
from dynzoo.layers.base import (
    check_choice,
    check_int,
    count_madds,
)
from dynzoo.layers.cdb import CDBBlock, group_width
from dynzoo.models.common import (
    check_application_args,
    finish_application,
    imagenet_preprocessing,
    model_input,
    no_official_checkpoint,
    register_family,
)
from dynzoo.models.resnet import resnet_stem

STEMS = ("imagenet", "cifar")


def cdb_config() -> dict:
    return load_config("cdb")


def check_target_rate(name: str, value) -> float:
    """A target execution/FLOPs rate must lie in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"`{name}` must be a number in (0, 1], got {value!r}.")
    return float(value)


def stage_widths(block: str, base_out: Sequence[int], groups: int) -> list[int]:
    """Group width w of each stage for N = ``groups``: Table 1's printed widths, else the parameter-
    preserving width of :func:`~dynzoo.layers.cdb.group_width`."""
    table = cdb_config()["group_widths"][block]
    if str(groups) in table:
        return list(table[str(groups)])
    return [group_width(block, w0, c, c, groups) for w0, c in zip(table["1"], base_out, strict=False)]


def CDBResNet(
    model_name: str,
    input_shape: Sequence[int | None] | None = None,
    include_top: bool = True,
    weights: str | None = None,
    input_tensor=None,
    pooling: str | None = None,
    classes: int | None = None,
    classifier_activation: str | None = "softmax",
    include_preprocessing: bool = True,
    dropout_rate: float | None = None,
    name: str | None = None,
    *,
    groups: int | None = None,
    width_multiplier: float | None = None,
    hidden: int | None = None,
    noise_stddev: float = 1.0,
    conditional: bool = True,
) -> keras.Model:
    """Build a CDB-ResNet of ``zoo_configs/cdb.json`` (CDB Table 1): a ResNet whose every block is a
    :class:`~dynzoo.layers.cdb.CDBBlock` of N gated channel groups, controllers chained block to block.

    Args:
        input_shape: (H, W, 3); default (224, 224, 3), (32, 32, 3) for the CIFAR variants. ImageNet stem:
            H, W multiples of 32; CIFAR stem (3×3/1 conv + 2×2/2 max-pool): multiples of 16.
        include_top: keep the classifier (GAP → Dropout → Dense).
        weights: None or the path of Keras ``.weights.h5`` weights (no CDB checkpoint is published).
        input_tensor: optional Keras tensor to build on.
        pooling: with ``include_top=False``: None (the last feature map), "avg" or "max".
        classes: classes of the top (default 1000, 100 for ``cdb_resnet50_cifar``).
        classifier_activation: applied to the logits (layer ``classifier``); None returns the logits.
        include_preprocessing: the model takes RGB in [0, 255] and applies the ImageNet mean/std.
        dropout_rate: dropout before the classifier (default 0).
        name: model name; default ``model_name``.
        groups: N, channel groups per block (≥ 1; default the named model's). Widths: Table 1 for N = 1–4,
            otherwise the width that keeps each block's parameters.
        width_multiplier: scales the stem, the group widths and the stage outputs (> 0; default the model's).
        hidden: d of the controllers (default 32).
        noise_stddev: σ of the gate noise in training (the paper: 1).
        conditional: at inference skip the groups whose gate is off (False: compute all, mask by 0).
    """
    models = cdb_config()["models"]
    if model_name not in models:
        raise ValueError(f"`model_name` must be one of {sorted(models)}, got {model_name!r}.")
    cfg = models[model_name]
    groups = check_int("groups", cfg["groups"] if groups is None else groups)
    multiplier = cfg["width_multiplier"] if width_multiplier is None else width_multiplier
    if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or multiplier <= 0:
        raise ValueError(f"`width_multiplier` must be a number > 0, got {multiplier!r}.")
    hidden = check_int("hidden", cdb_config()["hidden"] if hidden is None else hidden)
    stem = check_choice("stem", cfg["stem"], STEMS)
    classes = cfg["classes"] if classes is None else classes
    height, width, chans = check_application_args(
        model_name=model_name,
        input_shape=input_shape,
        input_tensor=input_tensor,
        include_top=include_top,
        weights=weights,
        pooling=pooling,
        classes=classes,
        default_size=cfg["default_size"],
        min_size=32 if stem == "imagenet" else 16,
    )
    dropout_rate = 0.0 if dropout_rate is None else dropout_rate
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1), got {dropout_rate!r}.")

    def scaled(c: int) -> int:
        return max(1, round(c * multiplier))

    inputs, x = model_input((height, width, chans), input_tensor)
    if include_preprocessing:
        x = imagenet_preprocessing(chans)(x)
    x = resnet_stem(x, scaled(64), small_input=stem == "cifar")
    h = None
    widths = stage_widths(cfg["block"], cfg["out_channels"], groups)
    for stage, (out, w, blocks) in enumerate(zip(cfg["out_channels"], widths, cfg["layers"], strict=False), start=1):
        for index in range(blocks):
            block = CDBBlock(
                cfg["block"],
                scaled(w),
                scaled(out),
                groups,
                2 if stage > 1 and index == 0 else 1,
                hidden=hidden,
                noise_stddev=noise_stddev,
                conditional=conditional,
                seed=len(cfg["layers"]) * 100 + stage * 100 + index,
                name=f"layer{stage}_{index}",
            )
            x, h, _ = block(x if h is None else [x, h])
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate:
            x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
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
        official_loader=no_official_checkpoint("CDB"),
    )


# ----------------------------------------------------------------------------------------------------
# Gates, effective FLOPs, per-stage figures.


def cdb_blocks(model: keras.Model) -> list[CDBBlock]:
    blocks = [layer for layer in model.layers if isinstance(layer, CDBBlock)]
    if not blocks:
        raise ValueError(f"`model` {model.name!r} has no CDB blocks.")
    return blocks


def block_stage(block: CDBBlock) -> int:
    """The stage (1, 2, …) of a block named ``layer<stage>_<index>`` by the builder."""
    return int(block.name[len("layer") :].split("_")[0])


def input_shape_of(layer: keras.layers.Layer):
    inp = layer.input
    return [tuple(t.shape) for t in inp] if isinstance(inp, (list, tuple)) else tuple(inp.shape)


@dataclass(frozen=True)
class GateCosts:
    """MAdds of one sample: ``group`` (blocks,) of one group of each block, ``static`` (everything the gates
    do not switch: stem, shortcuts, controllers, classifier), ``total`` with every group on, and the stage
    of each block."""

    group: np.ndarray
    static: int
    total: int
    stages: np.ndarray
    groups: int

    def effective(self, gates: np.ndarray) -> np.ndarray:
        """Effective MAdds per sample of gates (samples, blocks, N): ``static + Σ_l g_l Σ_n s_{l,n}``."""
        return self.static + (np.asarray(gates).sum(-1) * self.group).sum(-1)


def gate_costs(model: keras.Model) -> GateCosts:
    """The :class:`GateCosts` of a CDB network (its input shape must be known)."""
    blocks = cdb_blocks(model)
    total = sum(
        count_madds(layer, input_shape_of(layer))
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    )
    group = np.array([b.group_madds(input_shape_of(b)) for b in blocks], dtype="int64")
    n = blocks[0].groups
    return GateCosts(group, int(total - n * group.sum()), int(total), np.array([block_stage(b) for b in blocks]), n)


def gate_model(model: keras.Model, outputs: str = "predictions", hidden: bool = False) -> keras.Model:
    """A model sharing ``model``'s layers that also returns every block's executed gates.

    Outputs ``[y, gates (B, blocks, N)]`` (and ``hidden (B, blocks, d)``, the controllers' states, with
    ``hidden=True``); ``y`` is the model's output (``"predictions"``) or the ``classifier`` layer's logits.
    """
    blocks = cdb_blocks(model)
    if outputs not in ("predictions", "logits"):
        raise ValueError(f"`outputs` must be 'predictions' or 'logits', got {outputs!r}.")
    y = model.outputs[0] if outputs == "predictions" else model.get_layer("classifier").output

    def stack(index: int, label: str):
        per_block = [
            keras.layers.Reshape((1, b.output[index].shape[-1]), name=f"{b.name}_{label}")(b.output[index])
            for b in blocks
        ]
        return keras.layers.Concatenate(axis=1, name=label)(per_block) if len(per_block) > 1 else per_block[0]

    result = [y, stack(2, "gates")] + ([stack(1, "hidden")] if hidden else [])
    return keras.Model(model.inputs, result, name=f"{model.name}_gates")


@dataclass(frozen=True)
class GateReport:
    """Per-sample gates of a CDB network on a set of inputs.

    Attributes:
        outputs: (S, …) the model's outputs.
        gates: (S, blocks, N) 0/1, the executed groups.
        madds: (S,) effective MAdds of each sample.
        costs: the network's :class:`GateCosts`.
    """

    outputs: np.ndarray
    gates: np.ndarray
    madds: np.ndarray
    costs: GateCosts

    @property
    def flops_ratio(self) -> float:
        """Mean effective MAdds over the MAdds with every group on."""
        return float(self.madds.mean() / self.costs.total)

    @property
    def execution_rate(self) -> float:
        return float(self.gates.mean())

    def stage_figures(self) -> dict[int, dict[str, float]]:
        """Per stage: ``execution_rate`` (fraction of groups on) and ``flops_ratio`` (effective over
        all-on MAdds of the stage's groups)."""
        figures = {}
        for stage in np.unique(self.costs.stages):
            sel = self.costs.stages == stage
            on = self.gates[:, sel].sum(-1)  # (S, blocks of the stage)
            figures[int(stage)] = {
                "execution_rate": float(self.gates[:, sel].mean()),
                "flops_ratio": float(
                    (on * self.costs.group[sel]).sum(-1).mean() / (self.costs.groups * self.costs.group[sel].sum())
                ),
            }
        return figures

    def stage_table(self) -> str:
        rows = ["| stage | execution rate | FLOPs ratio of its groups |", "|---|---|---|"]
        rows += [
            f"| {s} | {f['execution_rate']:.2f} | {f['flops_ratio']:.2f} |" for s, f in self.stage_figures().items()
        ]
        return "\n".join(rows)


def analyze_gates(
    model: keras.Model, images: np.ndarray, batch_size: int = 64, verbose: int = 0, gated: keras.Model | None = None
) -> GateReport:
    """Run ``model`` (inference mode) on ``images``; report the gates and effective MAdds of each sample.
    ``gated``: ``gate_model(model)`` built once by a caller that analyses repeatedly."""
    gated = gate_model(model) if gated is None else gated
    outputs, gates = gated.predict(np.asarray(images), batch_size=batch_size, verbose=verbose)
    costs = gate_costs(model)
    return GateReport(outputs, gates, costs.effective(gates), costs)


def force_gates(model: keras.Model, on) -> None:
    """Fix every block's gates (for analysis and benchmarks; overwrites the controllers' last layer).

    Args:
        on: 0/1 per group, broadcast to (blocks, N): e.g. ``[1, 0]`` keeps group 1 of every block and
            switches group 2 off.
    """
    blocks = cdb_blocks(model)
    pattern = np.broadcast_to(np.asarray(on, dtype=bool), (len(blocks), blocks[0].groups))
    for block, row in zip(blocks, pattern, strict=False):
        dense = block.controller.logits_fc
        kernel, _ = dense.get_weights()
        bias = np.stack([np.where(row, -10.0, 10.0), np.where(row, 10.0, -10.0)], axis=-1).reshape(-1)
        dense.set_weights([np.zeros_like(kernel), bias.astype(kernel.dtype)])


BUILDERS = register_family(
    "cdb",
    CDBResNet,
    cdb_config()["models"],
    describe=lambda _, c: f"CDB-ResNet ({c['block']}, {c['layers']}, N={c['groups']}, {c['stem']} stem; Su et al.)",
    function_name=lambda name: "".join(p.upper() if p == "cdb" else p.capitalize() for p in name.split("_")),
)
