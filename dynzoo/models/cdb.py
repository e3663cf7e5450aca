"""CDB-ResNets (Context-aware Dynamic Block, Su et al.; spec §2): builders, per-sample gate analysis and
effective FLOPs, the training losses (category, execution rate, FLOPs ratio) and the ``dynzoo train`` hook.

Configurations: ``zoo_configs/cdb.json``. Every residual block is a :class:`~dynzoo.layers.cdb.CDBBlock`
whose controller passes its hidden state to the next block's controller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import ops

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
    named_builder,
)
from dynzoo.models.resnet import resnet_stem
from dynzoo.registry import register_model
from dynzoo.train.hooks import register_training_hook

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
        official_loader=_no_official_checkpoint,
    )


def _no_official_checkpoint(model, path, include_top=True):
    raise ValueError(
        f"`weights`: CDB has no released official checkpoint to convert ({path!r}); pass Keras `.weights.h5` weights."
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


def _input_shape(layer: keras.layers.Layer):
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
        count_madds(layer, _input_shape(layer))
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    )
    group = np.array([b.group_madds(_input_shape(b)) for b in blocks], dtype="int64")
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


def effective_profile(model: keras.Model, images: np.ndarray, batch_size: int = 64):
    """The profiler's per-layer table (:func:`dynzoo.profile.profile`) with each CDB block's MAdds replaced
    by its mean effective MAdds on ``images`` (the gates the network executes)."""
    from dynzoo.profile import profile

    report = analyze_gates(model, images, batch_size)
    blocks = {b.name: i for i, b in enumerate(cdb_blocks(model))}
    base = profile(model)
    rows = []
    for row in base.layers:
        if row.name in blocks:
            i = blocks[row.name]
            block = model.get_layer(row.name)
            madds = block.static_madds(_input_shape(block)) + report.gates[:, i].sum(-1).mean() * report.costs.group[i]
            row = dataclasses.replace(row, madds=round(madds))
        rows.append(row)
    return dataclasses.replace(base, layers=tuple(rows))


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


# ----------------------------------------------------------------------------------------------------
# Losses (CDB §3.2.2, §3.3) and training.


def stage_category_weights(stages: Sequence[int], stage1_weight: float, growth: float) -> np.ndarray:
    """α_l of every controller: ``stage1_weight · growth^(stage − 1)`` (paper: 1e-4, ×10 per stage)."""
    return np.array([stage1_weight * growth ** (s - 1) for s in stages], dtype="float32")


class CategoryLoss:
    """``L_ctg = Σ_l α_l CE(k, p_l)`` (eqs. 7–8): cross-entropy of each controller's category head against
    the coarse category of the label.

    Args:
        category_map: (classes,) class → category (see :func:`dynzoo.data.categories.category_map`).
        weights: (blocks,) α_l.

    Call with ``(y_true, category_logits (B, blocks, K))``; ``y_true`` integer labels (B,) or one-hot /
    smoothed / mixed class targets (B, classes), mapped to category targets by a matrix product.
    """

    def __init__(self, category_map: np.ndarray, weights: Sequence[float]):
        from dynzoo.data.categories import category_matrix

        self.matrix = category_matrix(np.asarray(category_map))
        self.weights = np.asarray(weights, dtype="float32")

    def __call__(self, y_true, category_logits):
        classes = self.matrix.shape[0]
        if len(y_true.shape) == 1 or y_true.shape[-1] == 1:
            y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), classes)
        target = ops.matmul(ops.cast(y_true, "float32"), self.matrix)  # (B, K)
        log_p = ops.log_softmax(category_logits, axis=-1)  # (B, blocks, K)
        ce = -ops.sum(target[:, None, :] * log_p, axis=-1)  # (B, blocks)
        return ops.sum(ops.mean(ce, axis=0) * self.weights)


class ExecutionRateLoss:
    """``L_exec = Σ_l (e − z_l)²`` (eqs. 10–11); z_l = the fraction of block l's groups on in the batch.

    Args:
        target: e in (0, 1]. Call with gates (B, blocks, N).
    """

    def __init__(self, target: float):
        self.target = check_target_rate("target", target)

    def __call__(self, gates):
        return ops.sum(ops.square(self.target - ops.mean(gates, axis=(0, 2))))


class FlopsRatioLoss:
    """``L_flops = (f / f_total − r)²`` (eqs. 12–13) with f the batch mean of each sample's executed MAdds,
    ``f = f_static + Σ_l Σ_n s_{l,n} f_{l,n}`` (the static part is included so that f / f_total can reach 1).

    Args:
        target: r in (0, 1].
        costs: the network's :class:`GateCosts`. Call with gates (B, blocks, N).
    """

    def __init__(self, target: float, costs: GateCosts):
        self.target = check_target_rate("target", target)
        self.group = (costs.group / costs.total).astype("float32")
        self.static = costs.static / costs.total

    def ratio(self, gates):
        """Per-sample f / f_total (B,)."""
        return self.static + ops.sum(ops.sum(gates, axis=-1) * self.group, axis=-1)

    def __call__(self, gates):
        return ops.square(ops.mean(self.ratio(gates)) - self.target)


class CDBTrainer(keras.Model):
    """Trains a CDB network with ``fit`` on ``α1·L_ctg + α2·(L_exec + L_flops) + α3·L_cls`` (eq. 15, all α = 1).

    Wraps a network built by :func:`CDBResNet` (weights shared: train the trainer, deploy the network) and
    adds the training-only category heads (one Dense(K) on each controller's hidden state, dropped after
    training). ``L_cls`` is the compiled loss (the trainer's recipe loss with its weight decay; plain
    cross-entropy when compiled without a loss). Reports ``loss``, ``category_loss``, ``exec_loss``,
    ``flops_loss``, ``exec_rate`` and ``flops_ratio`` (of the training gates, noise included), plus the
    compiled metrics. Save the network, not the trainer.

    Args:
        network: the CDB network (``include_top=True``; its logits are the ``classifier`` layer's output).
        target_rate: r = e in (0, 1]; None: no resource losses.
        category_map: (classes,) class → category; None: no category loss.
        category_weight: α of the stage-1 controllers (×``growth`` per stage; default the config's 1e-4, ×10).
        growth: the per-stage factor.
    """

    def __init__(
        self,
        network: keras.Model,
        target_rate: float | None = None,
        category_map=None,
        category_weight: float | None = None,
        growth: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.network = network
        self.graph = gate_model(network, outputs="logits", hidden=True)
        self.costs = gate_costs(network)
        blocks = cdb_blocks(network)
        self.exec_loss = self.flops_loss = self.category_loss = None
        self.ratio = FlopsRatioLoss(1.0, self.costs)  # its per-sample ratio, for the log
        if target_rate is not None:
            self.exec_loss = ExecutionRateLoss(target_rate)
            self.flops_loss = FlopsRatioLoss(target_rate, self.costs)
        self.heads = []
        if category_map is not None:
            from dynzoo.data.categories import category_map as check_map

            cmap = check_map(category_map, network.output_shape[-1])
            defaults = cdb_config()["category_loss"]
            weight = defaults["stage1_weight"] if category_weight is None else category_weight
            growth = defaults["growth"] if growth is None else growth
            for label, value in (("category_weight", weight), ("growth", growth)):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ValueError(f"`{label}` must be a number >= 0, got {value!r}.")
            self.category_loss = CategoryLoss(cmap, stage_category_weights(self.costs.stages, weight, growth))
            self.heads = [keras.layers.Dense(int(cmap.max()) + 1, name=f"category_{b.name}") for b in blocks]
            for head, block in zip(self.heads, blocks, strict=False):
                head.build((None, block.hidden))  # before compile, so the optimizer knows their variables
        names = (["category_loss"] if self.category_loss else []) + (
            ["exec_loss", "flops_loss"] if self.exec_loss else []
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names + ["exec_rate", "flops_ratio"]}

    def call(self, inputs, training=None):
        logits, gates, hidden = self.graph(inputs, training=training)
        if not self.heads:
            return [logits, gates]
        categories = ops.stack([head(hidden[:, i]) for i, head in enumerate(self.heads)], axis=1)
        return [logits, gates, categories]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits, gates = y_pred[0], y_pred[1]
        if self._compile_loss is None:
            classes = logits.shape[-1]
            target = (
                y
                if len(y.shape) == 2 and y.shape[-1] == classes
                else ops.one_hot(ops.cast(ops.reshape(y, (-1,)), "int32"), classes)
            )
            loss = ops.mean(keras.losses.categorical_crossentropy(target, logits, from_logits=True))
            if self.losses:
                loss = loss + ops.sum(self.losses)
        else:
            loss = super().compute_loss(x, y, logits, sample_weight, training)
        terms = {}
        if self.category_loss is not None:
            terms["category_loss"] = self.category_loss(y, y_pred[2])
        if self.exec_loss is not None:
            terms["exec_loss"] = self.exec_loss(gates)
            terms["flops_loss"] = self.flops_loss(gates)
        for name, value in terms.items():
            self.trackers[name].update_state(value)
            loss = loss + value
        self.trackers["exec_rate"].update_state(ops.mean(gates))
        self.trackers["flops_ratio"].update_state(self.ratio.ratio(gates))
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        super().compute_metrics(x, y, y_pred[0], sample_weight)
        return self.get_metrics_result()


class GateLogger(keras.callbacks.Callback):
    """At the end of every ``every``-th epoch, run the network on ``images`` in inference mode and log the
    execution rate and FLOPs ratio, overall and per stage: ``logs["inference_flops_ratio"]``,
    ``logs["inference_exec_rate"]``, ``logs["inference_stage<s>_exec_rate"]``,
    ``logs["inference_stage<s>_flops_ratio"]`` (the gates executed at inference on these images; the
    trainer's own ``exec_rate``/``flops_ratio`` are those of the noisy training gates). Reports are kept in
    ``self.reports``.

    Args:
        images: inputs (a few hundred are enough).
        network: the CDB network (default: the model being trained, or its ``network``).
        every: epochs between two reports (≥ 1).
        verbose: print the per-stage table.
    """

    def __init__(self, images: np.ndarray, network: keras.Model | None = None, every: int = 1, verbose: int = 0):
        super().__init__()
        self.images, self.network = np.asarray(images), network
        self.every = check_int("every", every)
        self.verbose = verbose
        self.reports: dict[int, GateReport] = {}
        self._gated = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        network = self.network or getattr(self.model, "network", self.model)
        if self._gated is None:  # built once: its inference function is traced once
            self._gated = gate_model(network)
        report = analyze_gates(network, self.images, gated=self._gated)
        self.reports[epoch] = report
        if logs is not None:
            logs["inference_flops_ratio"] = report.flops_ratio
            logs["inference_exec_rate"] = report.execution_rate
            for stage, figures in report.stage_figures().items():
                logs[f"inference_stage{stage}_exec_rate"] = figures["execution_rate"]
                logs[f"inference_stage{stage}_flops_ratio"] = figures["flops_ratio"]
        if self.verbose:
            print(
                f"\nepoch {epoch + 1}: FLOPs ratio {report.flops_ratio:.3f}, execution rate "
                f"{report.execution_rate:.3f}\n{report.stage_table()}"
            )


TRAINING_OPTIONS = {
    "target_flops": (
        float,
        ("CDB: target FLOPs ratio r = execution rate e in (0, 1] (adds the execution-rate and FLOPs losses)"),
    ),
    "category_map": (
        str,
        (
            "CDB: class -> coarse category map for the controllers' category loss: 'cifar100', "
            "'digits' or a JSON file (a list, one category per class)"
        ),
    ),
    "category_weight": (float, ("CDB: category-loss weight of the stage-1 controllers, x10 per stage (default 1e-4)")),
    "all_groups_on": (
        bool,
        ("CDB: train with every group on and the controllers frozen (the static multi-branch baseline)"),
    ),
}


def prepare_training(network, options: dict[str, Any], context):
    """The ``dynzoo train`` hook of the CDB family: a :class:`CDBTrainer` with the given losses, a
    :class:`GateLogger` on the context's test images, and the measured FLOPs ratio in the summary; with
    ``all_groups_on`` the network itself with every gate forced on."""
    from dynzoo.train.hooks import TrainingSetup

    options = dict(options)
    if not options.pop("all_groups_on", False):
        if not options:
            return TrainingSetup(model=network, network=network)
        if "target_flops" in options:
            check_target_rate("target_flops", options["target_flops"])
        if "category_weight" in options and "category_map" not in options:
            raise ValueError("training option `category_weight` needs `category_map` (the category loss it weighs).")
        model = CDBTrainer(
            network,
            options.get("target_flops"),
            options.get("category_map"),
            options.get("category_weight"),
            name=f"{network.name}_trainer",
        )
    elif options:
        raise ValueError(f"training option `all_groups_on` trains without gating; it excludes {sorted(options)}.")
    else:
        force_gates(network, 1)
        for block in cdb_blocks(network):
            block.controller.trainable = False
        model = network
    images = np.asarray(context.sample_images)

    def report(net) -> dict[str, Any]:
        gates = analyze_gates(net, images)
        return {
            "flops_ratio": gates.flops_ratio,
            "execution_rate": gates.execution_rate,
            "stages": gates.stage_figures(),
            "effective_mmadds": float(gates.madds.mean() / 1e6),
            "all_on_mmadds": gates.costs.total / 1e6,
            "gate_images": len(images),
        }

    callbacks = [GateLogger(images, network, verbose=int(context.verbose == 2))] if len(images) else []
    return TrainingSetup(model=model, network=network, callbacks=callbacks, report=report if len(images) else None)


def _builder(model_name: str):
    function_name = "".join(p.upper() if p == "cdb" else p.capitalize() for p in model_name.split("_"))
    return named_builder(CDBResNet, model_name, function_name)


BUILDERS = {}
for _name, _cfg in cdb_config()["models"].items():
    BUILDERS[_name] = _builder(_name)
    register_model(
        _name,
        BUILDERS[_name],
        family="cdb",
        description=f"CDB-ResNet ({_cfg['block']}, {_cfg['layers']}, N={_cfg['groups']}, "
        f"{_cfg['stem']} stem; Su et al.)",
        reference=_cfg["reference"],
    )


register_training_hook("cdb", TRAINING_OPTIONS, prepare_training)
